"""CURVE keys: who may talk to the service, and encryption of everything said.

``evenflow keys DIR --name NAME`` writes ``NAME.key`` (public, to hand out) and
``NAME.key_secret`` (private, stays on its host). The service is given its own
secret key and a folder of the public keys it accepts; workers and clients
are given their own secret key and the service's public key. A peer whose key
is not in the folder never completes the handshake, so nothing it sends
reaches the service; the refusals are counted from the socket's monitor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from orchestrator.core.errors import ConfigurationError


def make_keypair(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write ``name.key`` and ``name.key_secret`` into ``directory``; refuse to overwrite a secret."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / f"{name}.key_secret"
    if secret.exists():
        raise ConfigurationError(f"{secret} exists; pick another --name or remove it first")
    public_path, secret_path = zmq.auth.create_certificates(str(folder), name)
    os.chmod(secret_path, 0o600)
    return Path(public_path), Path(secret_path)


def _load(path: str | os.PathLike[str], *, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, private = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot read the CURVE key {path}: {exc}; make keys with `evenflow keys DIR --name NAME`"
        ) from None
    if secret and private is None:
        raise ConfigurationError(f"{path} holds no secret key; pass the NAME.key_secret file")
    return public, private


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """The service's own secret key and the folder of public keys it accepts."""

    secret_file: Path
    authorized: Path

    def apply(
        self, context: zmq.Context[zmq.Socket[bytes]], socket: zmq.Socket[bytes]
    ) -> ThreadAuthenticator:
        """Make ``socket`` a CURVE server that admits only the authorized keys; returns the authenticator."""
        if not self.authorized.is_dir():
            raise ConfigurationError(f"{self.authorized} is not a folder of public keys (NAME.key files)")
        public, secret = _load(self.secret_file, secret=True)
        authenticator = ThreadAuthenticator(context)
        authenticator.start()
        authenticator.configure_curve(domain="*", location=str(self.authorized))
        socket.curve_publickey = public
        socket.curve_secretkey = secret or b""
        socket.curve_server = True
        return authenticator


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """A worker's or client's own secret key and the service's public key."""

    secret_file: Path
    server_file: Path

    def apply(self, socket: zmq.Socket[bytes]) -> None:
        public, secret = _load(self.secret_file, secret=True)
        server, _ = _load(self.server_file, secret=False)
        socket.curve_publickey = public
        socket.curve_secretkey = secret or b""
        socket.curve_serverkey = server


def server_keys(secret: str | None, authorized: str | None) -> ServerKeys | None:
    """Both or neither: a half-configured service would look secure and not be."""
    if secret is None and authorized is None:
        return None
    if secret is None or authorized is None:
        raise ConfigurationError(
            "CURVE needs both --secret-key (the service's) and --authorized (a key folder)"
        )
    return ServerKeys(Path(secret), Path(authorized))


def client_keys(secret: str | None, server: str | None) -> ClientKeys | None:
    if secret is None and server is None:
        return None
    if secret is None or server is None:
        raise ConfigurationError(
            "CURVE needs both --secret-key (this peer's) and --server-key (the service's)"
        )
    return ClientKeys(Path(secret), Path(server))
