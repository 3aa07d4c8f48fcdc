// Node.js Socket.IO 4 reference server for the benchmark (issue 7): the same events as
// the edge on the benchmarked paths, two or more processes over Redis with the official
// @socket.io/redis-adapter, on a key prefix of its own (never mixes with the stack).
//
//   node server.js PORT NODE_ID
// env: REDIS_URL, JWT_SECRET, BENCH_NODE_PREFIX (default "bench-node"), MONGO_URL
//
// Events: auth on connect (HS256 JWT, same secret and claims) -> `authenticated`, room
// `user:<sub>`; `join_room` / `leave_room` (membership checked in MongoDB `conversations`,
// like the edge); `message_send` -> MongoDB insert + seq + outbox XADD, then `message_new`
// to the room except the sender; `typing_start` / `typing_stop` -> `user_typing`;
// `presence_update` -> `user_presence` to the user's room. Per-socket token buckets as in
// PROTOCOL §11. Every event is acked `{ok, ...}` / `{ok: false, error}`.
"use strict";
const http = require("http");
const crypto = require("crypto");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");
const { MongoClient } = require("mongodb");

const port = Number(process.argv[2] || 5201);
const nodeId = process.argv[3] || `node-${port}`;
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379/0";
const secret = process.env.JWT_SECRET || "dev-secret-do-not-use-in-production";
const prefix = process.env.BENCH_NODE_PREFIX || "bench-node";
const mongoUrl = process.env.MONGO_URL || "mongodb://127.0.0.1:27017/realtime";
const OUTBOX = `${prefix}:outbox`;

const RATES = { message_send: 20, typing_start: 5, typing_stop: 5, presence_update: 2, "*": 20 };

function b64urlDecode(s) { return Buffer.from(s.replace(/-/g, "+").replace(/_/g, "/"), "base64"); }

function verify(token) {
  if (typeof token !== "string") throw err("auth_invalid", "token missing");
  const parts = token.split(".");
  if (parts.length !== 3) throw err("auth_invalid", "malformed token");
  let header, claims;
  try {
    header = JSON.parse(b64urlDecode(parts[0]));
    claims = JSON.parse(b64urlDecode(parts[1]));
  } catch (e) { throw err("auth_invalid", "malformed token"); }
  if (header.alg !== "HS256") throw err("auth_invalid", "algorithm not allowed");
  const mac = crypto.createHmac("sha256", secret).update(`${parts[0]}.${parts[1]}`).digest();
  const sig = b64urlDecode(parts[2]);
  if (sig.length !== mac.length || !crypto.timingSafeEqual(sig, mac)) throw err("auth_invalid", "bad signature");
  if (typeof claims.sub !== "string" || !claims.sub) throw err("auth_invalid", "sub missing");
  if (typeof claims.exp !== "number") throw err("auth_invalid", "exp missing");
  if (claims.exp * 1000 <= Date.now()) throw err("auth_expired", "token expired");
  return claims;
}

function err(code, message) { const e = new Error(message); e.code = code; return e; }
function fail(code, message) { return { ok: false, error: { code, message } }; }

function take(socket, name) {
  const rate = RATES[name] || RATES["*"];
  const now = Date.now() / 1000;
  let b = socket.data.buckets[name];
  if (!b) b = socket.data.buckets[name] = { tokens: 2 * rate, at: now };
  b.tokens = Math.min(2 * rate, b.tokens + (now - b.at) * rate);
  b.at = now;
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  const cmd = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect(), cmd.connect()]);
  const mongo = new MongoClient(mongoUrl, { maxPoolSize: 10 });
  await mongo.connect();
  const db = mongo.db();
  const conversations = db.collection("conversations");
  const messages = db.collection(`${prefix}_messages`);

  const httpServer = http.createServer((req, res) => {
    if (req.url === "/healthz" || req.url === "/readyz") { res.writeHead(200); res.end("ok\n"); return; }
    res.writeHead(404); res.end();
  });
  const io = new Server(httpServer, {
    adapter: createAdapter(pub, sub, { key: `${prefix}-socket.io` }),
    cors: { origin: "*" },
    maxHttpBufferSize: 1024 * 1024,
    pingInterval: 25000,
    pingTimeout: 20000,
    perMessageDeflate: false,
  });

  io.use((socket, next) => {
    try {
      const claims = verify(socket.handshake.auth && socket.handshake.auth.token);
      socket.data.user = claims.sub;
      socket.data.device = claims.did || (socket.handshake.auth && socket.handshake.auth.device_id) || socket.id;
      socket.data.exp = claims.exp;
      socket.data.session = claims.sid || null;
      socket.data.buckets = {};
      socket.data.rooms = new Set();
      next();
    } catch (e) {
      const refusal = new Error(e.message);
      refusal.data = { code: e.code || "auth_invalid", message: e.message };
      next(refusal);
    }
  });

  async function member(conversationId, userId) {
    const conv = await conversations.findOne({ _id: conversationId }, { projection: { members: 1, last_seq: 1 } });
    if (!conv) throw err("not_found", "conversation not found");
    if (!(conv.members || []).includes(userId)) throw err("forbidden", "not a member of this conversation");
    return conv;
  }

  const handlers = {
    async join_room(socket, data) {
      const id = data.conversation_id;
      if (typeof id !== "string" || !id) return fail("invalid_payload", "conversation_id required");
      const conv = await member(id, socket.data.user);
      socket.join(`conv:${id}`);
      socket.data.rooms.add(id);
      return { ok: true, conversation_id: id, last_seq: conv.last_seq || 0 };
    },
    async leave_room(socket, data) {
      socket.leave(`conv:${data.conversation_id}`);
      socket.data.rooms.delete(data.conversation_id);
      return { ok: true, conversation_id: data.conversation_id };
    },
    async message_send(socket, data) {
      const id = data.conversation_id;
      const body = data.body;
      if (typeof id !== "string" || typeof data.client_msg_id !== "string" || typeof body !== "string"
          || body.length < 1 || body.length > 16384) return fail("invalid_payload", "bad message");
      // membership (like the edge: the conversation document, every send), the next seq
      // (Redis INCR: FerretDB has no findAndModify), then the message and the outbox event
      await member(id, socket.data.user);
      const seq = await cmd.incr(`${prefix}:seq:${id}`);
      const now = new Date();
      const message = {
        id: `${Date.now().toString(16).padStart(12, "0")}${crypto.randomBytes(8).toString("hex")}`,
        conversation_id: id, seq, sender_id: socket.data.user, body,
        reply_to: data.reply_to || null, created_at: now.toISOString(), edited_at: null,
        client_msg_id: data.client_msg_id,
      };
      await messages.insertOne({ _id: message.id, ...message });
      await cmd.xAdd(OUTBOX, "*", { envelope: JSON.stringify({ type: "message.created", data: { message } }) },
                     { TRIM: { strategy: "MAXLEN", strategyModifier: "~", threshold: 10000 } });
      socket.to(`conv:${id}`).emit("message_new", { message });
      return { ok: true, message };
    },
    async typing_start(socket, data) {
      socket.to(`conv:${data.conversation_id}`).emit("user_typing",
        { conversation_id: data.conversation_id, user_id: socket.data.user, typing: true });
      return { ok: true };
    },
    async typing_stop(socket, data) {
      socket.to(`conv:${data.conversation_id}`).emit("user_typing",
        { conversation_id: data.conversation_id, user_id: socket.data.user, typing: false });
      return { ok: true };
    },
    async presence_update(socket, data) {
      io.to(`user:${socket.data.user}`).emit("user_presence",
        { user_id: socket.data.user, status: data.status, message: data.message || null, last_seen: null });
      return { ok: true };
    },
  };

  io.on("connection", (socket) => {
    socket.join(`user:${socket.data.user}`);
    socket.emit("authenticated", {
      user_id: socket.data.user, session_id: socket.data.session, device_id: socket.data.device,
      expires_at: new Date(socket.data.exp * 1000).toISOString(),
    });
    // Events of one socket run one after another, in the order sent (PROTOCOL §3).
    let chain = Promise.resolve();
    socket.onAny((event, ...args) => {
      const ack = typeof args[args.length - 1] === "function" ? args.pop() : () => {};
      chain = chain.then(async () => {
        const handler = handlers[event];
        if (!take(socket, handler ? event : "*")) return ack(fail("rate_limited", `too many ${event} events`));
        if (!handler) return ack(fail("invalid_payload", `unknown event '${event}'`));
        const data = args[0] && typeof args[0] === "object" ? args[0] : {};
        try {
          ack(await handler(socket, data));
        } catch (e) {
          ack(e.code ? fail(e.code, e.message) : fail("internal", "internal error"));
        }
      });
    });
  });

  httpServer.listen(port, "127.0.0.1", () => console.error(`reference ${nodeId} listening on ${port}`));
}

main().catch((e) => { console.error(e); process.exit(1); });
