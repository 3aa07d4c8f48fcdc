// Two official socket.io-client 4.x clients connect through the load balancer
// with the transport given on the command line, authenticate, join a
// conversation and exchange a message. Prints one JSON line with what happened.
// usage: node exchange.js URL TRANSPORT CONVERSATION TOKEN_A TOKEN_B
const { io } = require("socket.io-client");

const [url, transport, conversationId, tokenA, tokenB] = process.argv.slice(2);
const transports = transport === "polling" ? ["polling"] : ["websocket"];
const result = { transport };

function connect(token) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { transports, auth: { token }, reconnection: false, timeout: 5000 });
    socket.on("authenticated", (info) => resolve({ socket, info }));
    socket.on("connect_error", (err) => reject(new Error(`connect_error ${err.message} ${JSON.stringify(err.data)}`)));
  });
}

function refused(token) {
  return new Promise((resolve) => {
    const socket = io(url, { transports, auth: { token }, reconnection: false, timeout: 5000 });
    socket.on("connect", () => { socket.close(); resolve(null); });
    socket.on("connect_error", (err) => { socket.close(); resolve(err.data); });
  });
}

async function main() {
  const timer = setTimeout(() => { console.log(JSON.stringify({ error: "timeout", ...result })); process.exit(1); }, 20000);
  const a = await connect(tokenA);
  const b = await connect(tokenB);
  result.authenticated = [a.info.user_id, b.info.user_id];
  result.engine_transport = b.socket.io.engine.transport.name;
  const joinA = await a.socket.emitWithAck("join_room", { conversation_id: conversationId });
  const joinB = await b.socket.emitWithAck("join_room", { conversation_id: conversationId });
  result.joined = joinA.ok && joinB.ok;
  const received = new Promise((resolve) => b.socket.on("message_new", resolve));
  const ack = await a.socket.emitWithAck("message_send", {
    conversation_id: conversationId, client_msg_id: `js-${transport}`, body: `hello over ${transport}`,
  });
  result.ack = ack;
  result.received = await received;
  const reply = new Promise((resolve) => a.socket.on("message_new", resolve));
  await b.socket.emitWithAck("message_send", { conversation_id: conversationId, client_msg_id: `js-reply-${transport}`, body: "reply" });
  result.reply = await reply;
  result.unknown = await a.socket.emitWithAck("nonsense", {});
  result.refused = await refused("not-a-token");
  a.socket.close();
  b.socket.close();
  clearTimeout(timer);
  console.log(JSON.stringify(result));
}

main().catch((err) => { console.log(JSON.stringify({ error: String(err), ...result })); process.exit(1); });
