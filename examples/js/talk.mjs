// Talk to a conversation of an agent fleet with the official Socket.IO client.
//
//   npm install
//   node talk.mjs http://127.0.0.1:8000[,http://127.0.0.1:8001,...] TOKEN CONVERSATION_ID [MESSAGE]
//
// Sends MESSAGE (default "hi"), prints the conversation so far, then the turn live (the
// answer's text as it is streamed, then the logged answer) and exits. If the gateway it
// talks to goes away, it connects to the next URL with the last event id it printed:
// the gateway replays what came after it, and the streamed text goes on where it was.
//
// Output, one line each: `connected to URL`, `ack {...}`, `#ID SOURCE KIND {data}` for a
// logged event, `  ... TEXT` for streamed text, `  (again) TEXT` when a resumed turn's
// new owner replaces the text of the step being written.

import { io } from "socket.io-client";

const [urlList, token, conversationId, message = "hi"] = process.argv.slice(2);
if (!urlList || !token || !conversationId) {
  console.error("usage: node talk.mjs URL[,URL...] TOKEN CONVERSATION_ID [MESSAGE]");
  process.exit(2);
}
const urls = urlList.split(",");
// Chosen here, so that the message sent again after a lost connection is queued once.
const actionId = `js-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

let latestEventId = -1; // the last event printed
let acked = false;
const steps = new Map(); // "turn/step" -> { epoch, seq, text }: text being streamed

setTimeout(() => {
  console.error("no answer within 60 s");
  process.exit(1);
}, 60000).unref();

function connect(attempt) {
  const url = urls[attempt % urls.length];
  const socket = io(url, {
    transports: ["websocket"],
    reconnection: false, // reconnect ourselves: to the next gateway, from latestEventId
    forceNew: true,
    auth: { token, conversation_id: conversationId, latest_event_id: latestEventId },
  });
  // On each connection, the first frame of a (turn, epoch, step) holds its whole text so far.
  const seen = new Set();

  socket.on("connect", async () => {
    console.log(`connected to ${url}`);
    if (acked) return;
    const action = { kind: "message", data: { content: message }, action_id: actionId };
    try {
      const ack = await socket.timeout(15000).emitWithAck("user_action", action);
      if (!ack.ok) {
        console.error(`refused: ${ack.error.code}: ${ack.error.message}`);
        process.exit(1);
      }
      acked = true;
      console.log(`ack ${JSON.stringify(ack)}`);
    } catch {
      // Lost with the connection: sent again on the next one.
    }
  });

  socket.on("event", (event) => {
    if (event.id <= latestEventId) return; // printed already
    latestEventId = event.id;
    console.log(`#${event.id} ${event.source} ${event.kind} ${JSON.stringify(event.data)}`);
    if (event.data.turn_id !== undefined) steps.delete(`${event.data.turn_id}/${event.data.step}`);
    if (event.data.in_reply_to === actionId) {
      socket.disconnect();
      process.exit(0);
    }
  });

  socket.on("stream", (frame) => {
    const key = `${frame.turn_id}/${frame.step}`;
    const whole = !seen.has(`${frame.turn_id}/${frame.epoch}/${frame.step}`);
    seen.add(`${frame.turn_id}/${frame.epoch}/${frame.step}`);
    const held = steps.get(key);
    if (!held || frame.epoch > held.epoch) {
      // A new step, or the turn resumed on a new owner: its text replaces what we had.
      steps.set(key, { epoch: frame.epoch, seq: frame.seq, text: frame.delta });
      console.log(`${held ? "  (again)" : "  ..."} ${frame.delta}`);
    } else if (frame.epoch === held.epoch && frame.seq > held.seq) {
      const delta = whole ? frame.delta.slice(held.text.length) : frame.delta;
      held.seq = frame.seq;
      held.text += delta;
      if (delta) console.log(`  ... ${delta}`);
    }
  });

  socket.on("connect_error", (err) => {
    if (err.data?.code && err.data.code !== "too_many_connections") {
      console.error(`refused: ${err.data.code}: ${err.data.message}`);
      process.exit(1);
    }
    setTimeout(() => connect(attempt + 1), 200); // unreachable: try the next gateway
  });

  socket.on("disconnect", (reason) => {
    if (reason !== "io client disconnect") setTimeout(() => connect(attempt + 1), 100);
  });
}

connect(0);
