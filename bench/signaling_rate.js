// Load generator for bench/signaling_rate.py: N answered 1:1 calls on one edge node,
// each caller trickling `call_signal` ICE candidates to its callee at a fixed rate
// (below the 50/s per-socket limit). Reads its plan as JSON on stdin, prints one JSON line.
const path = require("path");
const { io } = require(path.join(__dirname, "..", "tests", "js", "node_modules", "socket.io-client"));

const CANDIDATE = "candidate:842163049 1 udp 1677729535 192.0.2.10 54321 typ srflx raddr 10.0.0.5 rport 54321 generation 0 ufrag 4ZcD network-cost 999";

function connect(edge, token) {
  return new Promise((resolve, reject) => {
    const socket = io(edge, { transports: ["websocket"], auth: { token }, reconnection: false, timeout: 10000 });
    socket.on("authenticated", () => resolve(socket));
    socket.on("connect_error", (err) => reject(new Error(`connect_error ${err.message}`)));
  });
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null;
}

async function main() {
  const plan = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const { edge, pairs, rate_per_socket: rate, duration_s: duration } = plan;
  const calls = [];
  for (const p of pairs) {
    const caller = await connect(edge, p.caller_token);
    const callee = await connect(edge, p.callee_token);
    const incoming = new Promise((resolve) => callee.once("call_incoming", resolve));
    const ack = await caller.emitWithAck("call_initiate", { conversation_id: p.conversation_id, media: "audio" });
    if (!ack.ok) throw new Error(`call_initiate ${JSON.stringify(ack)}`);
    await incoming;
    const answered = await callee.emitWithAck("call_answer", { call_id: ack.call_id });
    if (!answered.ok) throw new Error(`call_answer ${JSON.stringify(answered)}`);
    calls.push({ caller, callee, callId: ack.call_id, to: p.callee_id });
  }
  const latencies = [];
  let sent = 0, acked = 0, refused = 0, received = 0, receivedInWindow = 0;
  let windowEnd = Infinity;
  let lastReceivedAt = 0;
  for (const c of calls) {
    c.callee.on("call_signal", (s) => {
      const now = Date.now();
      received += 1;
      lastReceivedAt = now;
      if (now <= windowEnd) receivedInWindow += 1;
      latencies.push(now - s.data.sent_at);
    });
  }
  const tickMs = 100;
  const perTick = rate * tickMs / 1000;
  const start = Date.now();
  windowEnd = start + duration * 1000;
  let carry = 0;
  const timer = setInterval(() => {
    if (Date.now() >= windowEnd) return;
    carry += perTick;
    const n = Math.floor(carry);
    carry -= n;
    for (const c of calls) {
      for (let i = 0; i < n; i++) {
        sent += 1;
        c.caller.emit("call_signal", {
          call_id: c.callId, to_user_id: c.to, kind: "ice_candidate",
          data: { candidate: CANDIDATE, sdpMid: "0", sdpMLineIndex: 0, sent_at: Date.now() },
        }, (ack) => { if (ack && ack.ok) acked += 1; else refused += 1; });
      }
    }
  }, tickMs);
  await new Promise((r) => setTimeout(r, duration * 1000));
  clearInterval(timer);
  // Drain: what was sent in the window may still be in flight.
  const drainUntil = Date.now() + 15000;
  while ((acked + refused < sent || received < acked) && Date.now() < drainUntil) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const sorted = latencies.slice().sort((a, b) => a - b);
  const elapsed = (Date.now() - start) / 1000;
  const stats = {
    calls: calls.length, sockets: calls.length * 2, offered_per_s: calls.length * rate, duration_s: duration,
    sent, acked, refused, received, sent_per_s: Math.round(sent / duration),
    delivered_in_window_per_s: Math.round(receivedInWindow / duration),
    // Everything sent, over the time until the last one arrived (backlog included).
    delivered_per_s: Math.round(received / ((lastReceivedAt - start) / 1000)),
    latency_ms: { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted[sorted.length - 1] },
    drained_s: Math.round((elapsed - duration) * 10) / 10,
  };
  for (const c of calls) {
    await c.caller.emitWithAck("call_end", { call_id: c.callId });
    c.caller.close();
    c.callee.close();
  }
  console.log(JSON.stringify(stats));
  process.exit(0);
}

main().catch((err) => { console.log(JSON.stringify({ error: String(err && err.stack || err) })); process.exit(1); });
