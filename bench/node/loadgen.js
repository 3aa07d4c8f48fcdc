// Load generator for the benchmark (issue 7): the official socket.io-client over the
// websocket transport, the same for the Python edge and the Node.js reference.
//
//   node loadgen.js SPEC.json
// SPEC: {mode: "idle"|"room"|"listen", clients: [{url, token, join: [conversation_id]}],
//        connect_concurrency, phases: [{label, senders: [{client, conversation_id, rate}],
//        duration_s, drain_s}], body_bytes, listen_event}
// Prints JSON lines on stdout: {"phase": "connected", ...} once every client is connected
// and joined, then the results. In "idle" and "listen" mode it waits for a line "stop"
// on stdin before measuring/closing; in "room" mode it runs the open-loop send schedule
// (each sender sends at t0 + k/rate, never waiting for acks) then drains.
// One-way latency: the sender's clock (performance.timeOrigin + now) is in the payload;
// sender and receivers are this one process, so the clocks agree.
"use strict";
const fs = require("fs");
const readline = require("readline");
const { performance } = require("perf_hooks");
const { io } = require("socket.io-client");

const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const now = () => performance.timeOrigin + performance.now();
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

class Samples {
  constructor() { this.chunks = [new Float64Array(1 << 16)]; this.n = 0; }
  push(v) {
    const size = 1 << 16;
    const c = this.chunks[this.chunks.length - 1];
    const i = this.n % size;
    c[i] = v;
    this.n++;
    if (this.n % size === 0) this.chunks.push(new Float64Array(size));
  }
  summary() {
    const all = new Float64Array(this.n);
    let k = 0;
    for (const c of this.chunks) for (let i = 0; i < c.length && k < this.n; i++) all[k++] = c[i];
    all.sort();
    const q = (p) => (this.n ? all[Math.min(this.n - 1, Math.floor(p * this.n))] : null);
    const r = (v) => (v === null ? null : Math.round(v * 100) / 100);
    return { n: this.n, p50_ms: r(q(0.5)), p90_ms: r(q(0.9)), p99_ms: r(q(0.99)), max_ms: r(this.n ? all[this.n - 1] : null) };
  }
}

const sockets = [];
const connectLat = new Samples();
const deliveryLat = new Samples();
const deliveryLatRef = { current: deliveryLat };
let received = 0, firstDelivery = null, lastDelivery = null, reorders = 0, connectErrors = 0;
const lastSeq = new Map(); // receiver|sender|conversation -> seq
const joinedCount = new Map();

function connectOne(i, c) {
  return new Promise((resolve) => {
    const t0 = now();
    const socket = io(c.url, {
      transports: ["websocket"], auth: { token: c.token }, reconnection: false, timeout: 20000,
      forceNew: true,
    });
    let done = false;
    socket.on("authenticated", () => {
      if (done) return;
      done = true;
      connectLat.push(now() - t0);
      resolve(socket);
    });
    socket.on("connect_error", () => { if (!done) { done = true; connectErrors++; resolve(null); } });
    const onMessage = (payload) => {
      // listen mode: the publisher is another process; both stamp wall-clock epoch ms
      // (time.time() in Python, performance.timeOrigin + now() in Node)
      const t = now();
      const m = payload && payload.message ? payload.message : payload;
      const ts = parseFloat(m && typeof m.body === "string" ? m.body : (m && m.ts));
      if (!Number.isFinite(ts)) return;
      received++;
      if (firstDelivery === null) firstDelivery = t;
      lastDelivery = t;
      deliveryLatRef.current.push(t - ts);
      if (m.seq !== undefined && m.sender_id !== undefined) {
        const key = `${i}|${m.sender_id}|${m.conversation_id}`;
        const prev = lastSeq.get(key);
        if (prev !== undefined && m.seq <= prev) reorders++;
        lastSeq.set(key, m.seq);
      }
    };
    socket.on(spec.listen_event || "message_new", onMessage);
  });
}

async function pool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) { const i = next++; results[i] = await fn(items[i], i); }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

function waitStdin(word, onMark) {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin });
    rl.on("line", (line) => {
      if (line.trim() === word) { rl.close(); resolve(); } else if (line.trim() === "mark" && onMark) onMark();
    });
    rl.on("close", resolve);
  });
}


// One open-loop send schedule: each sender sends at t0 + k/rate, never waiting for acks.
async function runPhase(socks, phase) {
  const bodyBytes = spec.body_bytes || 100;
  const body = (ts) => { const s = ts.toFixed(3) + "|"; return s + "x".repeat(Math.max(0, bodyBytes - s.length)); };
  const senders = phase.senders.map((s) => ({ ...s, socket: socks[s.client], k: 0 }));
  received = 0; lastDelivery = null; reorders = 0; lastSeq.clear();
  const lat = new Samples();
  deliveryLatRef.current = lat;
  let sent = 0, acked = 0, expected = 0, errors = 0;
  const ackErrors = {};
  out({ phase: "phase_start", label: phase.label });
  const cpuRun = process.cpuUsage();
  const t0 = now() + 50;
  const end = t0 + phase.duration_s * 1000;
  await new Promise((resolve) => {
    const tick = () => {
      const t = now();
      for (const s of senders) {
        if (!s.socket) continue;
        while (t0 + (s.k * 1000) / s.rate <= Math.min(t, end)) {
          s.k++;
          sent++;
          const conv = s.conversation_id;
          const self = spec.clients[s.client].join.includes(conv) ? 1 : 0;
          s.socket.emit("message_send", { conversation_id: conv, client_msg_id: `b${s.client}-${s.k}-${Math.round(t0)}`, body: body(now()) },
            (ack) => {
              if (ack && ack.ok) { acked++; expected += (joinedCount.get(conv) || 0) - self; }
              else { errors++; const code = ack && ack.error ? ack.error.code : "none"; ackErrors[code] = (ackErrors[code] || 0) + 1; }
            });
        }
      }
      if (t >= end) resolve(); else setTimeout(tick, 1);
    };
    tick();
  });
  const drainUntil = now() + (phase.drain_s || 5) * 1000;
  while (now() < drainUntil && !(acked + errors >= sent && received >= expected)) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const cpu = process.cpuUsage(cpuRun);
  const elapsed = now() - t0;
  out({ phase: "phase_end", label: phase.label });
  const window = ((lastDelivery || now()) - t0) / 1000;
  return {
    label: phase.label, offered_msgs_per_s: senders.reduce((a, s) => a + s.rate, 0), duration_s: phase.duration_s,
    sent, acked, ack_errors: ackErrors, unacked: sent - acked - errors, expected, received,
    loss: Math.max(0, expected - received),
    loss_ratio: expected ? Math.round((Math.max(0, expected - received) / expected) * 10000) / 10000 : 0,
    reorders, deliveries_per_s: window > 0 ? Math.round(received / window) : 0,
    window_s: Math.round(window * 100) / 100, latency: lat.summary(),
    generator_cpu_pct: Math.round(((cpu.user + cpu.system) / 1000 / elapsed) * 100),
  };
}

async function main() {
  const cpu0 = process.cpuUsage();
  const tConnect = now();
  const conc = spec.connect_concurrency || 200;
  const socks = await pool(spec.clients, conc, (c, i) => connectOne(i, c));
  const connectS = (now() - tConnect) / 1000;
  // The generator's own CPU over the connects: near 100 % it, not the server, sets the pace.
  const connectCpu = process.cpuUsage(cpu0);
  const connectGenPct = Math.round(((connectCpu.user + connectCpu.system) / 1000 / (connectS * 1000)) * 100);
  let joinErrors = 0;
  await pool(spec.clients.map((c, i) => [c, i]), conc, async ([c, i]) => {
    const s = socks[i];
    if (!s) return;
    for (const conv of c.join || []) {
      const ack = await s.timeout(20000).emitWithAck("join_room", { conversation_id: conv }).catch(() => null);
      if (ack && ack.ok) joinedCount.set(conv, (joinedCount.get(conv) || 0) + 1);
      else joinErrors++;
    }
  });
  sockets.push(...socks);
  const connected = socks.filter(Boolean).length;
  out({ phase: "connected", connected, connect_errors: connectErrors, join_errors: joinErrors,
        connect_s: Math.round(connectS * 100) / 100, connect: connectLat.summary(),
        connect_generator_cpu_pct: connectGenPct });

  const result = { connected, connect_errors: connectErrors, join_errors: joinErrors, connect: connectLat.summary() };
  if (spec.mode === "room") {
    result.phases = [];
    for (const phase of spec.phases) {
      result.phases.push(await runPhase(socks, phase));
      await new Promise((r) => setTimeout(r, 300));
    }
  } else {
    // idle / listen: the orchestrator measures (memory, or publishes), then says "stop";
    // each "mark" prints the deliveries since the previous mark (one publish phase).
    const cpuRun = process.cpuUsage();
    const t0 = now();
    let markCpu = process.cpuUsage(), markT = now();
    await waitStdin("stop", () => {
      const cpu = process.cpuUsage(markCpu);
      const window = firstDelivery !== null ? (lastDelivery - firstDelivery) / 1000 : 0;
      out({ phase: "mark", received, reorders, latency: deliveryLatRef.current.summary(),
            window_s: Math.round(window * 100) / 100, deliveries_per_s: window > 0 ? Math.round(received / window) : 0,
            generator_cpu_pct: Math.round(((cpu.user + cpu.system) / 1000 / (now() - markT)) * 100) });
      received = 0; reorders = 0; firstDelivery = null; lastDelivery = null; lastSeq.clear();
      deliveryLatRef.current = new Samples();
      markCpu = process.cpuUsage(); markT = now();
    });
    const cpu = process.cpuUsage(cpuRun);
    const window = firstDelivery !== null ? (lastDelivery - firstDelivery) / 1000 : 0;
    Object.assign(result, {
      received, reorders, latency: deliveryLatRef.current.summary(),
      window_s: Math.round(window * 100) / 100, deliveries_per_s: window > 0 ? Math.round(received / window) : 0,
      generator_cpu_pct: Math.round(((cpu.user + cpu.system) / 1000 / (now() - t0)) * 100),
    });
  }
  const c = process.cpuUsage(cpu0);
  result.generator_cpu_s = Math.round((c.user + c.system) / 1e4) / 100;
  out({ phase: "done", ...result });
  for (const s of sockets) if (s) s.close();
  setTimeout(() => process.exit(0), 200);
}

main().catch((e) => { out({ phase: "error", error: String(e && e.stack || e) }); process.exit(1); });
