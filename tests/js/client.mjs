// Drives the official Socket.IO JavaScript client through the client protocol of
// DESIGN.md against a running gateway whose worker runs the echo agent:
//
//   node client.mjs GATEWAY_URL TOKEN CONVERSATION_ID
//
// 1. connect (latest_event_id -1), send user_action "js-1" with an ack, receive its
//    four live events (ids 0..3), disconnect;
// 2. connect a NEW socket with latest_event_id 1: events 2 and 3 are replayed; send
//    "js-2" and receive its four live events (ids 4..7);
// 3. connect with a bad token and record the connect_error.
//
// Prints ONE JSON object with everything observed on stdout and exits 0. Every wait is
// bounded; on a timeout or an unexpected error it prints what it saw on stderr and exits 1.
// It asserts nothing about the content: the Python test does.

import { io } from "socket.io-client";

const STEP_TIMEOUT_MS = 15000;
const ACK_TIMEOUT_MS = 10000;
const OVERALL_TIMEOUT_MS = 60000;

const [url, token, conversationId] = process.argv.slice(2);
if (!url || !token || !conversationId) {
  process.stderr.write("usage: node client.mjs GATEWAY_URL TOKEN CONVERSATION_ID\n");
  process.exit(2);
}

const observed = { transport: {}, acks: {}, phases: {}, connect_error: null };
const sockets = [];

function fail(message) {
  process.stderr.write(`js client: ${message}\nobserved so far: ${JSON.stringify(observed)}\n`);
  for (const socket of sockets) socket.disconnect();
  process.exit(1);
}

const watchdog = setTimeout(() => fail(`not done after ${OVERALL_TIMEOUT_MS} ms`), OVERALL_TIMEOUT_MS);

/** Resolve with `promise`, or reject after `ms` naming `what`. */
function bounded(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A new socket (never a shared Manager), recording every `event` it receives. */
function open(latestEventId, authToken = token) {
  const socket = io(url, {
    transports: ["websocket"],
    auth: { token: authToken, conversation_id: conversationId, latest_event_id: latestEventId },
    forceNew: true,
    reconnection: false,
    timeout: STEP_TIMEOUT_MS,
  });
  sockets.push(socket);
  const events = [];
  const waiters = new Set();
  socket.on("event", (event) => {
    events.push(event);
    for (const waiter of waiters) waiter();
  });
  /** Wait until `done(events)` holds. */
  const waitFor = (done, what) =>
    bounded(
      new Promise((resolve) => {
        const check = () => {
          if (done(events)) {
            waiters.delete(check);
            resolve(events);
          }
        };
        waiters.add(check);
        check();
      }),
      STEP_TIMEOUT_MS,
      `${what}; events so far: ${JSON.stringify(events)}`,
    );
  return { socket, events, waitFor };
}

/** Resolve once connected; reject with the connect_error if refused. */
function connected(socket) {
  return bounded(
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", (err) =>
        reject(new Error(`connect_error: ${err.message} ${JSON.stringify(err.data ?? null)}`)),
      );
    }),
    STEP_TIMEOUT_MS,
    "connect",
  );
}

/** Resolve with the disconnect reason after asking the socket to disconnect. */
function disconnected(socket) {
  const reason = new Promise((resolve) => socket.once("disconnect", resolve));
  socket.disconnect();
  return bounded(reason, STEP_TIMEOUT_MS, "disconnect");
}

function act(socket, content, actionId) {
  return socket
    .timeout(ACK_TIMEOUT_MS)
    .emitWithAck("user_action", { kind: "message", data: { content }, action_id: actionId });
}

const hasId = (id) => (events) => events.some((event) => event.id === id);

async function main() {
  // Phase 1: connect from scratch, act, receive the echo agent's answer live, leave.
  const first = open(-1);
  await connected(first.socket);
  observed.transport.first = first.socket.io.engine.transport.name;
  observed.acks["js-1"] = await act(first.socket, "from js", "js-1");
  await first.waitFor(hasId(3), "event 3 (the answer to js-1)");
  observed.phases.first = { events: [...first.events] };
  observed.phases.first.disconnect_reason = await disconnected(first.socket);

  // Phase 2: a new socket after event 1: the log replays 2 and 3, then live events.
  const second = open(1);
  await connected(second.socket);
  observed.transport.second = second.socket.io.engine.transport.name;
  await second.waitFor(hasId(3), "replay of event 3");
  observed.phases.replay = { events: [...second.events] };
  const replayed = second.events.length;
  observed.acks["js-2"] = await act(second.socket, "from js again", "js-2");
  await second.waitFor(hasId(7), "event 7 (the answer to js-2)");
  observed.phases.live = { events: second.events.slice(replayed) };
  observed.phases.live.disconnect_reason = await disconnected(second.socket);

  // Phase 3: a bad token is refused with {code, message} in err.data.
  const refused = open(-1, "not-a-valid-token");
  observed.connect_error = await bounded(
    new Promise((resolve, reject) => {
      refused.socket.once("connect", () => reject(new Error("connected with a bad token")));
      refused.socket.once("connect_error", (err) =>
        resolve({ message: err.message, data: err.data ?? null }),
      );
    }),
    STEP_TIMEOUT_MS,
    "connect_error for a bad token",
  );
  refused.socket.disconnect();
}

main().then(
  () => {
    clearTimeout(watchdog);
    process.stdout.write(`${JSON.stringify(observed)}\n`, () => process.exit(0));
  },
  (err) => fail(err?.stack ?? String(err)),
);
