// W4 publisher for the Node.js reference: @socket.io/redis-emitter (the adapter's
// companion for processes without a server), open loop, one user room per emit.
//   node emitter.js --prefix bench-node-socket.io --targets T.json --rate 2000 --duration 10 --redis URL
"use strict";
const fs = require("fs");
const { performance } = require("perf_hooks");
const { Emitter } = require("@socket.io/redis-emitter");
const { createClient } = require("redis");

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];

async function main() {
  const client = createClient({ url: args.redis || "redis://127.0.0.1:6379/0" });
  await client.connect();
  const emitter = new Emitter(client, { key: args.prefix });
  const targets = JSON.parse(fs.readFileSync(args.targets, "utf8"));
  const rate = Number(args.rate || 2000), duration = Number(args.duration || 10) * 1000;
  const event = args.event || "message_new", bodyBytes = Number(args["body-bytes"] || 100);
  let sent = 0;
  const t0 = Date.now(), end = t0 + duration;
  await new Promise((resolve) => {
    const tick = () => {
      const now = Date.now();
      const due = Math.floor(((Math.min(now, end) - t0) / 1000) * rate);
      while (sent < due) {
        const room = targets[sent % targets.length];
        const head = `${(performance.timeOrigin + performance.now()).toFixed(3)}|`;
        emitter.to(room).emit(event, { message: { conversation_id: room, sender_id: "publisher", seq: sent,
          body: head + "x".repeat(Math.max(0, bodyBytes - head.length)) } });
        sent++;
      }
      if (now >= end) resolve(); else setTimeout(tick, 1);
    };
    tick();
  });
  const elapsed = (Date.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 200));
  console.log(JSON.stringify({ sent, rate: Math.round(sent / elapsed), publisher: "@socket.io/redis-emitter 5.1.0" }));
  await client.quit();
}
main().catch((e) => { console.error(e); process.exit(1); });
