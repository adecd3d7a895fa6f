// evenflow: initiate the replica set, then create its admin, roles and users (mongosh).
//
// Run it on the member listed first, connected through that member's own loopback
// interface: on a keyfile-protected set with no users yet, only such a connection may
// initiate the set and create the first user (the localhost exception).
//
//   docker compose run --rm init                         (compose.yaml in this folder)
//   mongosh --quiet 'mongodb://127.0.0.1:27017/?directConnection=true' init.js   (on db1)
//
// Read from the environment; the passwords are never written here nor printed:
//   EVENFLOW_ADMIN_PASSWORD     required   the root user, for operators only
//   EVENFLOW_SERVICE_PASSWORD   required   evenflow's processes and `evenflow init`
//   EVENFLOW_ANALYST_PASSWORD   required   read-only queries (runs, status, audit, stats)
//   EVENFLOW_RS_MEMBERS         host:port,... the first is this member
//                               [mongo1:27017,mongo2:27018,mongo3:27019]
//   EVENFLOW_RS_NAME [evenflow]  EVENFLOW_DB [evenflow]  EVENFLOW_ADMIN_USER [admin]
//   EVENFLOW_SERVICE_USER [evenflow]  EVENFLOW_ANALYST_USER [evenflow-analyst]
//   EVENFLOW_INIT_TIMEOUT_S [120]   how long to wait for the election
//
// Safe to run again: an initiated set is left as it is, roles and users are brought to
// what this file says, and their passwords are set to the environment's (how to rotate
// one). Exits non-zero with one line saying what is wrong.

const TIMEOUT_MS = Number(setting("EVENFLOW_INIT_TIMEOUT_S", "120")) * 1000;
const SET_NAME = setting("EVENFLOW_RS_NAME", "evenflow");
const MEMBERS = setting("EVENFLOW_RS_MEMBERS", "mongo1:27017,mongo2:27018,mongo3:27019")
  .split(",")
  .map((host) => host.trim())
  .filter((host) => host !== "");
const DB_NAME = setting("EVENFLOW_DB", "evenflow");
const ADMIN = { user: setting("EVENFLOW_ADMIN_USER", "admin"), pwd: setting("EVENFLOW_ADMIN_PASSWORD") };
const SERVICE = { user: setting("EVENFLOW_SERVICE_USER", "evenflow"), pwd: setting("EVENFLOW_SERVICE_PASSWORD") };
const ANALYST = { user: setting("EVENFLOW_ANALYST_USER", "evenflow-analyst"), pwd: setting("EVENFLOW_ANALYST_PASSWORD") };

// User management waits for a majority like the log's own writes do: a user or role that
// only the old primary knew would vanish in a failover.
const WRITE_CONCERN = { w: "majority", wtimeout: 30000 };
const MECHANISMS = ["SCRAM-SHA-256"];
const UNAUTHORIZED = 13;
const AUTHENTICATION_FAILED = 18;

// The service role: what evenflow's processes do to the log, the leases, the checkpoints
// and the read models. readWrite already grants createCollection and createIndex; they
// are named again because `evenflow init` depends on them, so that the role keeps saying
// so if readWrite is ever replaced by a narrower list.
const SERVICE_ROLE = {
  name: "evenflowService",
  privileges: [{ resource: { db: DB_NAME, collection: "" }, actions: ["createCollection", "createIndex"] }],
  roles: [{ role: "readWrite", db: DB_NAME }],
};
// The analyst role: reads only. It cannot append, so it cannot alter the log by mistake.
const ANALYST_ROLE = { name: "evenflowAnalyst", privileges: [], roles: [{ role: "read", db: DB_NAME }] };

function setting(name, fallback) {
  const value = process.env[name];
  if (value !== undefined && value !== "") return value;
  if (fallback === undefined) fail(`${name} is not set: export it first (passwords come from the environment only)`);
  return fallback;
}

function fail(message) {
  print(`init.js: ${message}`);
  quit(1);
}

// One shape for both ways a command can fail in mongosh: a reply with ok: 0, or a throw.
function attempt(database, command) {
  try {
    const reply = database.runCommand(command);
    return reply.ok ? { ok: true, reply } : { ok: false, code: reply.code, message: reply.errmsg };
  } catch (error) {
    return { ok: false, code: error.code, message: error.message };
  }
}

function must(database, command, doing) {
  const result = attempt(database, command);
  if (!result.ok) fail(`${doing} failed: ${result.message} (code ${result.code})`);
  return result.reply;
}

// Poll with a deadline: an election takes seconds, never forever.
function waitFor(database, what, done) {
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    const result = attempt(database, { hello: 1 });
    if (result.ok && done(result.reply)) return result.reply;
    if (Date.now() >= deadline) {
      fail(`no ${what} after ${TIMEOUT_MS / 1000} s: check that every member is up and reaches the ` +
        `others by the names in EVENFLOW_RS_MEMBERS (rs.status() on this member says which it cannot)`);
    }
    sleep(500);
  }
}

// An authenticated admin connection to one member, or null when the admin password is refused.
function adminOn(host) {
  const credentials = `${encodeURIComponent(ADMIN.user)}:${encodeURIComponent(ADMIN.pwd)}`;
  const uri = `mongodb://${credentials}@${host}/admin?authSource=admin&directConnection=true`;
  try {
    const admin = new Mongo(uri).getDB("admin");
    const status = admin.runCommand({ connectionStatus: 1 });
    return status.ok && status.authInfo.authenticatedUsers.length > 0 ? admin : null;
  } catch (error) {
    if (error.code === AUTHENTICATION_FAILED || /authentication failed/i.test(String(error.message))) return null;
    fail(`cannot connect to ${host} as ${ADMIN.user}: ${error.message}`);
  }
  return null;
}

function ensureRole(database, role) {
  const exists = must(database, { rolesInfo: role.name }, `reading role ${role.name}`).roles.length > 0;
  const spec = { privileges: role.privileges, roles: role.roles, writeConcern: WRITE_CONCERN };
  must(database, exists ? { updateRole: role.name, ...spec } : { createRole: role.name, ...spec },
    `${exists ? "updating" : "creating"} role ${role.name}`);
  print(`role ${DB_NAME}.${role.name}: ${exists ? "updated" : "created"}`);
}

function ensureUser(database, account, role) {
  const exists = must(database, { usersInfo: account.user }, `reading user ${account.user}`).users.length > 0;
  const spec = { pwd: account.pwd, roles: [{ role, db: DB_NAME }], mechanisms: MECHANISMS, writeConcern: WRITE_CONCERN };
  must(database, exists ? { updateUser: account.user, ...spec } : { createUser: account.user, ...spec },
    `${exists ? "updating" : "creating"} user ${account.user}`);
  print(`user ${DB_NAME}.${account.user} (${role}): ${exists ? "updated, password set" : "created"}`);
}

function main() {
  if (MEMBERS.length < 3 || MEMBERS.length % 2 === 0) {
    fail(`EVENFLOW_RS_MEMBERS names ${MEMBERS.length} members: name an odd number, 3 or more, all holding ` +
      "data (an even count survives no more failures than one member fewer)");
  }
  const local = db.getSiblingDB("admin");

  // 1. Initiate, unless this member already belongs to the set. The first member gets a
  //    higher priority so that it wins the first election: the first user can only be
  //    created on the primary, through the connection this script holds. Step 4 undoes it.
  const first = must(local, { hello: 1 }, "asking this member who it is");
  const initiating = first.setName === undefined;
  if (initiating) {
    const members = MEMBERS.map((host, index) => ({ _id: index, host, priority: index === 0 ? 2 : 1 }));
    must(local, { replSetInitiate: { _id: SET_NAME, members } }, `initiating replica set ${SET_NAME}`);
    print(`replica set ${SET_NAME} initiated: ${MEMBERS.join(", ")}`);
  } else if (first.setName !== SET_NAME) {
    fail(`this member belongs to replica set ${first.setName}, not ${SET_NAME}: check EVENFLOW_RS_NAME`);
  } else {
    print(`replica set ${SET_NAME} already initiated`);
  }
  let state = waitFor(local, "primary", (reply) => reply.setName === SET_NAME && reply.primary !== undefined);
  const here = `127.0.0.1:${state.me.split(":").pop()}`;

  // 2. The admin user: log in if it exists, else create it through the localhost exception.
  let admin = adminOn(here);
  if (admin === null) {
    if (state.me !== MEMBERS[0]) fail(`run this on ${MEMBERS[0]}, the first member, not on ${state.me}`);
    if (initiating) {
      state = waitFor(local, "election of this member", (reply) => reply.isWritablePrimary === true);
    } else if (!state.isWritablePrimary) {
      fail(`${ADMIN.user} was refused here, and only the primary (now ${state.primary}) can create a first ` +
        "user: check EVENFLOW_ADMIN_PASSWORD, or run this on the primary if no user exists yet");
    }
    const created = attempt(local, {
      createUser: ADMIN.user, pwd: ADMIN.pwd, roles: [{ role: "root", db: "admin" }],
      mechanisms: MECHANISMS, writeConcern: WRITE_CONCERN,
    });
    if (!created.ok && created.code === UNAUTHORIZED) {
      fail(`users exist already and ${ADMIN.user} was refused: EVENFLOW_ADMIN_USER or EVENFLOW_ADMIN_PASSWORD ` +
        "does not match the admin created before");
    }
    if (!created.ok) fail(`creating the admin user failed: ${created.message} (code ${created.code})`);
    print(`user admin.${ADMIN.user} (root): created`);
    admin = adminOn(here);
    if (admin === null) fail(`the admin user was created but logging in as ${ADMIN.user} failed`);
  }

  // 3. Roles and users live in evenflow's database, so a store URL ending in /evenflow
  //    authenticates there with no authSource. They are written on the primary.
  state = waitFor(admin, "primary", (reply) => reply.primary !== undefined);
  const primary = state.isWritablePrimary ? admin : adminOn(state.primary);
  if (primary === null) fail(`the primary ${state.primary} refused ${ADMIN.user}'s password`);
  const evenflow = primary.getSiblingDB(DB_NAME);
  ensureRole(evenflow, SERVICE_ROLE);
  ensureRole(evenflow, ANALYST_ROLE);
  ensureUser(evenflow, SERVICE, SERVICE_ROLE.name);
  ensureUser(evenflow, ANALYST, ANALYST_ROLE.name);

  // 4. Equal priorities again, as step 1 left them only to win the first election. A
  //    preferred primary would take the role back after every restart of its host: one
  //    more election, one more pause in appends, for nothing.
  const config = must(primary, { replSetGetConfig: 1 }, "reading the replica set config").config;
  const [head, ...rest] = config.members;
  if (head.priority === 2 && rest.every((member) => member.priority === 1)) {
    head.priority = 1;
    config.version += 1;
    must(primary, { replSetReconfig: config }, "setting every member's priority to 1");
    print("member priorities: all 1");
  }

  const status = must(primary, { replSetGetStatus: 1 }, "reading the replica set status");
  for (const member of status.members) print(`  ${member.name}  ${member.stateStr}`);
  print(`done: point evenflow at mongodb://${encodeURIComponent(SERVICE.user)}:<password>@` +
    `${MEMBERS.join(",")}/${DB_NAME}?replicaSet=${SET_NAME}`);
}

main();
