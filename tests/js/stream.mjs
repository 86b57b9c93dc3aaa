// Drives the official Socket.IO JavaScript client through streamed turns and a stop,
// against two gateways of a fleet whose worker runs the echo agent with a word delay:
//
//   node stream.mjs GATEWAY_URL OTHER_GATEWAY_URL TOKEN CONVERSATION_ID
//
// 1. on the first gateway: send "st-1" (a long message), receive a few `stream` frames,
//    disconnect mid-turn; on the OTHER gateway, connect with the last event id seen:
//    receive the rest (one frame with the text so far, then the following deltas),
//    then the logged answer;
// 2. send "st-2" (long), and once it streams, a `stop`: receive `turn_aborted`.
//
// Prints ONE JSON object with everything observed and exits 0; on a timeout or an
// unexpected error it prints what it saw on stderr and exits 1. It asserts nothing:
// the Python test does.

import { io } from "socket.io-client";

const STEP_TIMEOUT_MS = 15000;
const OVERALL_TIMEOUT_MS = 60000;

const [url, otherUrl, token, conversationId] = process.argv.slice(2);
if (!url || !otherUrl || !token || !conversationId) {
  process.stderr.write("usage: node stream.mjs GATEWAY_URL OTHER_URL TOKEN CONVERSATION_ID\n");
  process.exit(2);
}

const observed = { acks: {}, first: null, second: null, stop: null };
const sockets = [];

function fail(message) {
  process.stderr.write(`js client: ${message}\nobserved so far: ${JSON.stringify(observed)}\n`);
  for (const socket of sockets) socket.disconnect();
  process.exit(1);
}

const watchdog = setTimeout(() => fail(`not done after ${OVERALL_TIMEOUT_MS} ms`), OVERALL_TIMEOUT_MS);

function bounded(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A new socket recording `event`s and `stream` frames; waitFor(done) on both. */
function open(at, latestEventId) {
  const socket = io(at, {
    transports: ["websocket"],
    auth: { token, conversation_id: conversationId, latest_event_id: latestEventId },
    forceNew: true,
    reconnection: false,
    timeout: STEP_TIMEOUT_MS,
  });
  sockets.push(socket);
  const seen = { events: [], frames: [] };
  const waiters = new Set();
  const changed = () => {
    for (const waiter of waiters) waiter();
  };
  socket.on("event", (event) => {
    seen.events.push(event);
    changed();
  });
  socket.on("stream", (frame) => {
    seen.frames.push(frame);
    changed();
  });
  const waitFor = (done, what) =>
    bounded(
      new Promise((resolve) => {
        const check = () => {
          if (done(seen)) {
            waiters.delete(check);
            resolve(seen);
          }
        };
        waiters.add(check);
        check();
      }),
      STEP_TIMEOUT_MS,
      `${what}; seen so far: ${JSON.stringify(seen)}`,
    );
  const ready = bounded(
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", (err) => reject(new Error(`connect_error: ${err.message}`)));
    }),
    STEP_TIMEOUT_MS,
    "connect",
  );
  return { socket, seen, waitFor, ready };
}

function send(socket, payload) {
  return socket.timeout(STEP_TIMEOUT_MS).emitWithAck("user_action", payload);
}

const words = (n, tag) => Array.from({ length: n }, (_, i) => `${tag}${i}`).join(" ");
const answered = (actionId) => (seen) =>
  seen.events.some((e) => e.kind === "message" && e.data.in_reply_to === actionId);

async function main() {
  // 1. Streamed turn, reconnecting to another gateway mid-turn.
  const first = open(url, -1);
  await first.ready;
  observed.acks["st-1"] = await send(first.socket, {
    kind: "message",
    data: { content: words(40, "a") },
    action_id: "st-1",
  });
  await first.waitFor((seen) => seen.frames.length >= 4, "4 frames of st-1");
  first.socket.disconnect();
  observed.first = { events: [...first.seen.events], frames: [...first.seen.frames] };
  const lastId = first.seen.events.at(-1).id;

  const second = open(otherUrl, lastId);
  await second.ready;
  await second.waitFor(answered("st-1"), "the answer to st-1");
  observed.second = { latest_event_id: lastId, events: [...second.seen.events], frames: [...second.seen.frames] };

  // 2. A stop of a streaming turn.
  const streamed = second.seen.frames.length;
  observed.acks["st-2"] = await send(second.socket, {
    kind: "message",
    data: { content: words(40, "b") },
    action_id: "st-2",
  });
  await second.waitFor((seen) => seen.frames.length >= streamed + 2, "2 frames of st-2");
  observed.acks.stop = await send(second.socket, { kind: "stop", action_id: "st-stop" });
  await second.waitFor(
    (seen) => seen.events.some((e) => e.kind === "turn_aborted") && seen.events.at(-1).kind === "state",
    "turn_aborted of st-2, then awaiting_user_input",
  );
  observed.stop = { events: second.seen.events.slice(observed.second.events.length) };
  second.socket.disconnect();
}

main().then(
  () => {
    clearTimeout(watchdog);
    process.stdout.write(`${JSON.stringify(observed)}\n`, () => process.exit(0));
  },
  (err) => fail(err?.stack ?? String(err)),
);
