// Two headless Chromium pages make a WebRTC call through the edge nodes' signaling:
// the caller (on EDGE_A) sends call_initiate with an offer, the callee (on EDGE_B)
// answers with call_answer, both trickle ICE candidates with call_signal, the peer
// connection reaches "connected" and a data channel carries a message each way.
// Each page loads the official socket.io-client from a local HTTP server.
// Prints one JSON line: what happened and the setup times (ms, measured in the caller's page).
// usage: node call_browser.js EDGE_A EDGE_B CONVERSATION TOKEN_CALLER TOKEN_CALLEE
const fs = require("fs");
const http = require("http");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const [edgeA, edgeB, conversationId, tokenCaller, tokenCallee] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const CLIENT_JS = path.join(__dirname, "node_modules", "socket.io-client", "dist", "socket.io.min.js");
const PAGE = "<!doctype html><meta charset=utf-8><title>call</title><script src=/socket.io.min.js></script>";

function serve() {
  const server = http.createServer((req, res) => {
    if (req.url === "/socket.io.min.js") {
      res.writeHead(200, { "Content-Type": "application/javascript" });
      res.end(fs.readFileSync(CLIENT_JS));
    } else {
      res.writeHead(200, { "Content-Type": "text/html" });
      res.end(PAGE);
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

// Runs inside a page. Shared by both roles; `role` picks the side.
async function peer({ role, edge, token, conversationId }) {
  const log = [];
  const note = (text) => { log.push(text); console.log(`${role}: ${text}`); };
  note(`start ${typeof io}`);
  const socket = io(edge, { transports: ["websocket"], auth: { token }, reconnection: false });
  // The callee listens for the call before any await: an event that arrives while
  // this page is still authenticating or setting up media would otherwise be dropped.
  const incomingCall = role === "callee" ? new Promise((resolve) => socket.on("call_incoming", resolve)) : null;
  const me = await new Promise((resolve, reject) => {
    socket.on("authenticated", resolve);
    socket.on("connect_error", (err) => reject(new Error(`connect_error ${err.message}`)));
  });
  note(`authenticated as ${me.user_id}`);
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  note("got media");
  const pc = new RTCPeerConnection({ iceServers: [] });
  stream.getTracks().forEach((t) => pc.addTrack(t, stream));
  let remote = null;          // {user_id, device_id} of the other side, once it is a participant
  let callId = null;
  const pending = [];         // local ICE candidates found before the other side is a participant
  const sendCandidate = (c) => socket.emitWithAck("call_signal", {
    call_id: callId, to_user_id: remote.user_id, to_device_id: remote.device_id,
    kind: "ice_candidate", data: c.toJSON(),
  }).then((ack) => { if (!ack.ok) note(`signal refused ${JSON.stringify(ack)}`); });
  pc.onicecandidate = (e) => {
    if (!e.candidate) return;
    note(`local candidate ${e.candidate.candidate}`);
    if (remote) sendCandidate(e.candidate); else pending.push(e.candidate);
  };
  const flush = () => { while (pending.length) sendCandidate(pending.shift()); };
  socket.on("call_signal", async (s) => {
    note(`remote ${s.kind}`);
    if (s.kind === "ice_candidate") await pc.addIceCandidate(s.data);
  });
  const connected = new Promise((resolve, reject) => {
    pc.onconnectionstatechange = () => {
      note(`connectionState ${pc.connectionState}`);
      if (pc.connectionState === "connected") resolve(performance.now());
      if (pc.connectionState === "failed") reject(new Error("peer connection failed"));
    };
  });
  const ended = new Promise((resolve) => socket.on("call_ended", resolve));
  const t = {};
  let echoed;
  if (role === "caller") {
    const channel = pc.createDataChannel("chat");
    echoed = new Promise((resolve) => {
      channel.onopen = () => channel.send(`ping from ${me.user_id}`);
      channel.onmessage = (e) => resolve(e.data);
    });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const answered = new Promise((resolve) => socket.on("call_answered", resolve));
    t.initiate = performance.now();
    const ack = await socket.emitWithAck("call_initiate", {
      conversation_id: conversationId, media: "audio", sdp: { type: offer.type, sdp: offer.sdp },
    });
    if (!ack.ok) throw new Error(`call_initiate refused ${JSON.stringify(ack)}`);
    callId = ack.call_id;
    window.__call = { socket, callId };
    const a = await answered;
    note(`answered by ${a.user_id}`);
    t.answered = performance.now();
    remote = { user_id: a.user_id, device_id: a.device_id };
    await pc.setRemoteDescription(a.sdp);
    flush();
    t.connected = await connected;
    const reply = await echoed;
    t.echoed = performance.now();
    return { role, me, callId, reply, log, ice_servers: ack.ice_servers,
             ms: { answered: t.answered - t.initiate, connected: t.connected - t.initiate,
                   data_channel_round_trip: t.echoed - t.initiate } };
  }
  // callee
  echoed = new Promise((resolve) => {
    pc.ondatachannel = (e) => {
      e.channel.onmessage = (m) => { e.channel.send(`pong to "${m.data}"`); resolve(m.data); };
    };
  });
  // Authenticated (so in the user's room on the server: call_incoming reaches this
  // socket) and ready to answer at once (the ring timeout is short in tests):
  // main() starts the caller only now.
  window.__calleeReady = true;
  note("ready");
  const incoming = await incomingCall;
  note(`incoming ${incoming.call_id}`);
  callId = incoming.call_id;
  await pc.setRemoteDescription(incoming.sdp);
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  const ack = await socket.emitWithAck("call_answer", { call_id: callId, sdp: { type: answer.type, sdp: answer.sdp } });
  if (!ack.ok) throw new Error(`call_answer refused ${JSON.stringify(ack)}`);
  remote = incoming.from;     // the caller is a participant from the start
  flush();
  await connected;
  const got = await echoed;
  return { role, me, callId, got, log, incoming_from: incoming.from, ended: await ended };
}

async function main() {
  const out = {};
  const timer = setTimeout(() => { console.log(JSON.stringify({ error: "timeout", ...out })); process.exit(1); }, 45000);
  const server = await serve();
  const origin = `http://127.0.0.1:${server.address().port}`;
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "call-browser-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
           // WebRTC leaves the loopback interface out of ICE gathering by default; the
           // test's network namespace has nothing else, and no STUN is needed on one host.
           "--allow-loopback-in-peer-connection"],
    // Playwright passes the fresh profile directory as --user-data-dir itself.
  });
  try {
    out.browser = context.browser() ? context.browser().version() : null;
    const [pageA, pageB] = [await context.newPage(), await context.newPage()];
    for (const page of [pageA, pageB]) {
      page.on("console", (m) => (out.console ||= []).push(m.text()));
      await page.goto(`${origin}/`);
      out.loaded = (out.loaded || 0) + 1;
    }
    const callee = pageB.evaluate(peer, { role: "callee", edge: edgeB, token: tokenCallee, conversationId });
    // call_incoming goes to the callee's connected sockets only: call once the callee
    // is authenticated and listening (a callee that fails first ends the wait too).
    await Promise.race([
      pageB.waitForFunction(() => window.__calleeReady === true, null, { timeout: 30000 }),
      callee.then((r) => { throw new Error(`callee finished before it was ready: ${JSON.stringify(r)}`); }),
    ]);
    const caller = pageA.evaluate(peer, { role: "caller", edge: edgeA, token: tokenCaller, conversationId });
    out.caller = await caller;
    out.hangup = await pageA.evaluate(() => window.__call.socket.emitWithAck("call_end", { call_id: window.__call.callId }));
    out.callee = await callee;
  } finally {
    await context.close();
    server.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  clearTimeout(timer);
  console.log(JSON.stringify(out));
}

main().catch((err) => { console.log(JSON.stringify({ error: String(err && err.stack || err) })); process.exit(1); });
