// Load generator for bench/receipts_load.py (official socket.io-client 4.x, one
// process: python-socketio clients are too heavy for 1,000 sockets here).
// Reads a JSON config on stdin: {urls, users: [{token, conv, partner}], rate,
// warmup_s, seconds}. Each user reads its conversation with an increasing seq at
// rate/users per second; the partner in the conversation measures read_receipt
// latency from the send of the read whose seq the receipt carries.
// Prints JSON lines: {phase: "connected"|"measuring"|"done", ...}.
const path = require("path");
const { io } = require(path.join(__dirname, "..", "tests", "js", "node_modules", "socket.io-client"));

const cfg = JSON.parse(require("fs").readFileSync(0, "utf8"));
const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const now = () => Number(process.hrtime.bigint()) / 1e6; // ms

const clients = [];
const sentAt = new Map(); // `${user}|${seq}` -> ms
const latencies = [];
const errors = {};
let acks = 0, nacks = 0, sent = 0, measuring = false, receiptsSeen = 0;

function connect(u, i) {
  return new Promise((resolve, reject) => {
    const url = cfg.urls[i % cfg.urls.length];
    const s = io(url, { transports: ["websocket"], auth: { token: u.token }, reconnection: false, timeout: 20000 });
    s.on("connect_error", (e) => reject(new Error(`connect_error ${e.message}`)));
    s.on("authenticated", () => {
      s.emit("join_room", { conversation_id: u.conv }, (ack) => ack && ack.ok ? resolve(s) : reject(new Error(JSON.stringify(ack))));
    });
    s.on("read_receipt", (e) => {
      if (e.user_id !== u.partner) return; // only the partner's reads
      const t = sentAt.get(`${e.user_id}|${e.seq}`);
      if (t !== undefined && measuring) { latencies.push(now() - t); receiptsSeen++; }
    });
  });
}

async function main() {
  const hard = setTimeout(() => { say({ phase: "error", error: "timeout" }); process.exit(1); }, (cfg.warmup_s + cfg.seconds + 120) * 1000);
  const t0 = now();
  // Connect in small batches so that the listen backlog is never the limit.
  for (let i = 0; i < cfg.users.length; i += 50) {
    const batch = cfg.users.slice(i, i + 50).map((u, j) => connect(u, i + j).then((s) => { clients[i + j] = { s, u, seq: 0 }; }));
    await Promise.all(batch);
  }
  say({ phase: "connected", clients: clients.length, connect_s: (now() - t0) / 1000 });
  const perTickMs = 10;
  const readsPerTick = cfg.rate * perTickMs / 1000;
  let credit = 0, next = 0;
  const start = now();
  const tick = setInterval(() => {
    const elapsed = (now() - start) / 1000;
    if (!measuring && elapsed >= cfg.warmup_s) { measuring = true; say({ phase: "measuring" }); }
    if (elapsed >= cfg.warmup_s + cfg.seconds) {
      clearInterval(tick);
      const sentMeasured = sent;
      // Let the last receipts arrive.
      setTimeout(() => {
        latencies.sort((a, b) => a - b);
        const pct = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.round(p / 100 * (latencies.length - 1)))] : null;
        say({ phase: "done", sent: sentMeasured, acks, nacks, errors, receipts: receiptsSeen,
              p50_ms: pct(50), p99_ms: pct(99), max_ms: latencies.length ? latencies[latencies.length - 1] : null });
        for (const c of clients) c.s.close();
        clearTimeout(hard);
        process.exit(0);
      }, 3000);
      return;
    }
    credit += readsPerTick;
    while (credit >= 1) {
      credit -= 1;
      const c = clients[next]; next = (next + 1) % clients.length;
      c.seq += 1;
      const key = `${c.u.user}|${c.seq}`;
      sentAt.set(key, now());
      if (measuring) sent++;
      c.s.emit("message_read", { conversation_id: c.u.conv, seq: c.seq }, (ack) => { if (ack && ack.ok) acks++; else { nacks++; const code = ack && ack.error ? ack.error.code : String(ack); errors[code] = (errors[code] || 0) + 1; } });
    }
  }, perTickMs);
}

main().catch((e) => { say({ phase: "error", error: String(e) }); process.exit(1); });
