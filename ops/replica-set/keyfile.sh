#!/usr/bin/env bash
# Generate the key the replica-set members authenticate each other with (security.keyFile).
#
#   ./keyfile.sh                      # ./keyfile beside this script, for compose.yaml
#   KEYFILE_OWNER=mongodb:mongodb ./keyfile.sh /etc/mongodb/keyfile    # on a member's host
#
# Every member must hold the same bytes, so copy the one file to each host rather than
# running this on each. mongod refuses a keyfile others can read, and reads it as the
# user it runs as: mode 400, owned by that user (uid 999 in the official image; under
# rootless Docker or Podman, the host uid that 999 maps to).
# Refuses to overwrite: a fresh key on one member would cut it off from the others.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
target=${1:-$here/keyfile}
owner=${KEYFILE_OWNER:-999:999}

die() { echo "keyfile.sh: $*" >&2; exit 1; }

if [[ -e $target ]]; then
  die "$target already exists; every member shares one key, so replacing it on one host
  locks that member out. To rotate, follow 'Rotating the keyfile' in ops/README.md."
fi
command -v openssl >/dev/null || die "openssl is needed to generate the key; install it and run again"
if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null; then
  as_root=(sudo --)
else
  die "changing the owner to $owner needs root: run as root or install sudo"
fi

umask 077
tmp=$(mktemp "$(dirname -- "$target")/.keyfile.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
# 756 random bytes are 1008 base64 characters: inside mongod's 6..1024 limit, and
# only characters it accepts in a key.
openssl rand -base64 756 >"$tmp"
chmod 400 "$tmp"
${as_root[@]+"${as_root[@]}"} chown "$owner" "$tmp"
mv -- "$tmp" "$target"    # complete or absent: never a half-written key under the real name
trap - EXIT
echo "keyfile.sh: wrote $target (mode 400, owner $owner)"
