"""Markdown table and PNG chart of bench/run.py's results (no plotting library:
the PNG is drawn with a 3x5 bitmap font and written with zlib)."""
from __future__ import annotations

import struct
import zlib

LOWER, HIGHER = "lower", "higher"
# A figure about the set-up, not the server (the generator's load): shown, never ranked.
CONTEXT = "context"


def median_of_runs(runs: list):
    """One result of the same shape as each run's, every number the median over the runs
    (tails move by 20-50 % between runs on a small machine; a median of alternated runs is
    steadier than any one). Other leaves (labels, errors) come from the first run that has
    them; a figure missing from some runs is the median of the others."""
    present = [r for r in runs if r is not None]
    if not present:
        return None
    if all(isinstance(r, dict) for r in present):
        keys = list(dict.fromkeys(k for r in present for k in r))
        return {k: median_of_runs([r.get(k) for r in present]) for k in keys}
    if all(isinstance(r, list) for r in present) and len({len(r) for r in present}) == 1:
        return [median_of_runs(list(items)) for items in zip(*present)]
    numbers = [r for r in present if isinstance(r, (int, float)) and not isinstance(r, bool)]
    if len(numbers) == len(present):
        ordered = sorted(numbers)
        mid = len(ordered) // 2
        median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
        return round(median, 3) if isinstance(median, float) else median
    return present[0]


def _get(d, *path):
    for p in path:
        if d is None:
            return None
        if isinstance(d, list):
            d = d[p] if isinstance(p, int) and p < len(d) else None
        else:
            d = d.get(p)
    return d


PUB_METRICS = ((("latency", "p50_ms"), "p50 ms", LOWER), (("latency", "p99_ms"), "p99 ms", LOWER),
               (("latency", "max_ms"), "max ms", LOWER), (("deliveries_per_s",), "deliveries/s", HIGHER),
               (("loss_ratio",), "loss ratio", LOWER), (("reorders",), "reorders", LOWER),
               (("server_us_per_delivery",), "server CPU us/delivery", LOWER),
               (("backing_us_per_delivery",), "Redis + database CPU us/delivery", LOWER),
               (("non_member_node_cpu_pct",), "CPU % of a node with no member", LOWER),
               (("non_member_us_per_emit",), "CPU us/emit on a node with no member", LOWER),
               (("publish_rate",), "emits/s published", HIGHER))


def rows(results: dict) -> list[tuple[str, str, object, object, object, str]]:
    """(workload, metric, edge, node, edge-stock, better)."""
    s = results.get("servers", {})
    e, n, st = s.get("edge", {}), s.get("node", {}), s.get("edge-stock", {})
    out = []
    for i, w in enumerate(e.get("W1") or n.get("W1") or []):
        c = w.get("clients")
        for key, label, better in (("connected", "connected", HIGHER), ("kb_per_connection", "KB per connection", LOWER),
                                   ("connect_p50_ms", "connect p50 ms", LOWER), ("connect_p99_ms", "connect p99 ms", LOWER),
                                   ("connect_cpu_us", "server CPU per connect µs", LOWER),
                                   ("backing_cpu_us_per_connect", "Redis + database CPU per connect µs", LOWER),
                                   ("connect_generator_cpu_pct", "generator CPU % during the connects", CONTEXT)):
            out.append((f"W1 {c:,} idle connections", label, _get(e, "W1", i, key), _get(n, "W1", i, key),
                        _get(st, "W1", i, key), better))

    def pub(wname, key, lab_prefix, skip=()):
        src = _get(e, wname, *key) or _get(n, wname, *key) or {}
        for label in (src.get("phases") or {}):
            lab = f"{lab_prefix} {label}"
            if label == "flat out":
                lab += f" ({fmt(_get(src, 'phases', label, 'offered_per_s'))}/s offered)"
            for path, mlabel, better in PUB_METRICS:
                if mlabel in skip:
                    continue
                vals = [_get(x, wname, *key, "phases", label, *path) for x in (e, n, st)]
                out.append((lab, mlabel, vals[0], vals[1], vals[2], better))

    for m in (e.get("W2") or n.get("W2") or {}):
        pub("W2", (m,), f"W2 {int(m):,} members", skip=("CPU % of a node with no member",
                                                        "CPU us/emit on a node with no member"))
    w = e.get("W2e2e") or n.get("W2e2e")
    if w:
        for j, ph in enumerate(w.get("phases") or []):
            lab = f"W2 e2e {w.get('connected')} members, clients' {ph.get('label')}"
            for key, label, better in ((("deliveries_per_s",), "deliveries/s", HIGHER),
                                       (("latency", "p50_ms"), "p50 ms", LOWER), (("latency", "p99_ms"), "p99 ms", LOWER),
                                       (("loss_ratio",), "loss ratio", LOWER), (("reorders",), "reorders", LOWER),
                                       (("acked",), "messages acked", HIGHER),
                                       (("server_us_per_delivery",), "server CPU us/delivery", LOWER),
                                       (("backing_us_per_delivery",), "Redis + database CPU us/delivery", LOWER)):
                vals = [_get(x, "W2e2e", "phases", j, *key) for x in (e, n, st)]
                out.append((lab, label, vals[0], vals[1], vals[2], better))
    pub("W3", (), "W3")
    pub("W4", (), "W4")
    return out


def ratio(edge, node):
    if not isinstance(edge, (int, float)) or not isinstance(node, (int, float)) or node == 0:
        return None
    return edge / node


def advantage(edge, node, better):
    """>1 when the edge is better."""
    if better == CONTEXT or not isinstance(edge, (int, float)) or not isinstance(node, (int, float)):
        return None
    if better == HIGHER:
        return edge / node if node else None
    if edge == 0 and node == 0:
        return 1.0
    if edge == 0:
        return None
    return node / edge


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def spreads(results: dict) -> dict[tuple[str, str], tuple[str, str]]:
    """(workload, metric) -> the lowest and highest of the edge's and of Node's runs, as
    text ("37.3–50.6"), when the results hold several runs (`--repeat`): a median alone
    hides how far apart the runs were."""
    runs = results.get("runs") or {}
    count = max((len(r) for r in runs.values()), default=0)
    if count < 2:
        return {}
    seen: dict[tuple[str, str], tuple[list, list]] = {}
    for i in range(count):
        one = {"servers": {kind: kind_runs[i] for kind, kind_runs in runs.items() if i < len(kind_runs)}}
        for wl, metric, e, n, _st, _better in rows(one):
            edge_values, node_values = seen.setdefault((wl, metric), ([], []))
            for values, v in ((edge_values, e), (node_values, n)):
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    values.append(v)

    def span(values: list) -> str:
        if not values:
            return "—"
        low, high = min(values), max(values)
        return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"

    return {key: (span(e), span(n)) for key, (e, n) in seen.items()}


def markdown(results: dict) -> str:
    m0, m1 = results.get("machine_start", {}), results.get("machine_end", {})
    spread = spreads(results)
    lines = ["# Benchmark: edge (python-socketio + eventlet) vs Node.js Socket.IO", "",
             f"Run {m0.get('time_utc')} – {m1.get('time_utc')} UTC; load average at start {m0.get('loadavg')}, "
             f"at end {m1.get('loadavg')}; {m0.get('cpus')} CPUs; generator on CPU {m0.get('generator_cpu')}, "
             f"servers on CPU {m0.get('server_cpu')}, Redis and the database on CPU {m0.get('backing_cpu') or 'any'}; Python {m0.get('python')}, Node {m0.get('node')}."
             + (f" Each figure is the median of {results['repeat']} runs, the servers alternated "
                f"(every run's figures: `runs` in the JSON; the lowest and highest of each server's runs "
                f"in the last two columns)." if results.get("repeat", 1) > 1 else ""), "",
             "`ratio` = edge / node; `edge better` = how many times better the edge is on that figure "
             "(>1: edge ahead). `edge-stock` = the same edge with EDGE_FAST_BROADCAST=off and FANOUT_ROUTING=broadcast.", ""]
    if spread:
        lines += ["| workload | metric | edge | node | ratio | edge better | edge-stock | edge runs | node runs |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    else:
        lines += ["| workload | metric | edge | node | ratio | edge better | edge-stock |",
                  "|---|---|---:|---:|---:|---:|---:|"]
    for wl, metric, e, n, st, better in rows(results):
        r = ratio(e, n)
        a = advantage(e, n, better)
        how = "not ranked" if better == CONTEXT else f"{better} is better"
        line = (f"| {wl} | {metric} ({how}) | {fmt(e)} | {fmt(n)} | "
                f"{'—' if r is None else f'{r:.2f}'} | {'—' if a is None else f'{a:.2f}×'} | {fmt(st)} |")
        if spread:
            edge_span, node_span = spread.get((wl, metric), ("—", "—"))
            line += f" {edge_span} | {node_span} |"
        lines.append(line)
    w5 = results.get("W5")
    if w5:
        lines += ["", "## W5: outbox → Kafka relay (one worker)", "",
                  "| figure | value |", "|---|---:|"]
        for k, v in w5.items():
            lines.append(f"| {k} | {fmt(v)} |")
    lines += ["", "Generator and server CPU per phase (% of one core; servers: node 1, node 2, then the node "
              "with no member). Where the generator is near 100 % it is the bottleneck:", ""]
    for kind, res in results.get("servers", {}).items():
        for wname in ("W2", "W3", "W4"):
            w = res.get(wname) or {}
            groups = w.items() if wname == "W2" else [("", w)]
            for m, g in groups:
                for label, ph in ((g or {}).get("phases") or {}).items():
                    lines.append(f"- {kind} {wname} {m} {label}: generator {ph.get('generator_cpu_pct')} %, serving "
                                 f"nodes {ph.get('serving_nodes_cpu_pct')} %, node with no member "
                                 f"{ph.get('non_member_node_cpu_pct')} %, Redis + database {ph.get('backing_cpu_pct')} %")
        for ph in ((res.get("W2e2e") or {}).get("phases") or []):
            lines.append(f"- {kind} W2 e2e {ph.get('label')}: generator {ph.get('generator_cpu_pct')} %, "
                         f"servers {ph.get('server_cpu_pct')} %, Redis + database {ph.get('backing_cpu_pct')} %")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ PNG
_FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", "A": "010101111101101", "B": "110101110101110",
    "C": "011100100100011", "D": "110101101101110", "E": "111100110100111", "F": "111100110100100",
    "G": "011100101101011", "H": "101101111101101", "I": "111010010010111", "J": "001001001101010",
    "K": "101101110101101", "L": "100100100100111", "M": "101111111101101", "N": "110101101101101",
    "O": "010101101101010", "P": "110101110100100", "Q": "010101101110011", "R": "110101110101101",
    "S": "011100010001110", "T": "111010010010010", "U": "101101101101111", "V": "101101101101010",
    "W": "101101111111101", "X": "101101010101101", "Y": "101101010010010", "Z": "111001010100111",
    " ": "000000000000000", ".": "000000000000010", "/": "001001010100100", "-": "000000111000000",
    "%": "101001010100101", "(": "010100100100010", ")": "010001001001010", ":": "000010000010000",
    "=": "000111000111000", ">": "100010001010100", "<": "001010100010001", ",": "000000000010100",
    "_": "000000000000111",
}


class Canvas:
    def __init__(self, w, h, bg=(255, 255, 255)):
        self.w, self.h = w, h
        self.px = bytearray(bytes(bg) * (w * h))

    def rect(self, x0, y0, x1, y1, c):
        x0, x1 = max(0, int(x0)), min(self.w, int(x1))
        y0, y1 = max(0, int(y0)), min(self.h, int(y1))
        row = bytes(c) * max(0, x1 - x0)
        for y in range(y0, y1):
            i = (y * self.w + x0) * 3
            self.px[i:i + len(row)] = row

    def text(self, x, y, s, c=(0, 0, 0), scale=2):
        for ch in s.upper():
            g = _FONT.get(ch, _FONT[" "])
            for r in range(5):
                for k in range(3):
                    if g[r * 3 + k] == "1":
                        self.rect(x + k * scale, y + r * scale, x + (k + 1) * scale, y + (r + 1) * scale, c)
            x += 4 * scale

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3]) for y in range(self.h))

        def chunk(tag, data):
            return struct.pack("!I", len(data)) + tag + data + struct.pack("!I", zlib.crc32(tag + data) & 0xFFFFFFFF)

        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack("!IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def png(results: dict, path) -> None:
    items = []
    for wl, metric, e, n, _st, better in rows(results):
        if metric in {"reorders", "loss ratio", "lost", "connected", "messages acked", "max ms", "emits/s published"}:
            continue
        a = advantage(e, n, better)
        if a is not None:
            items.append((f"{wl} {metric}", a))
    bar_h, gap, left, width = 14, 6, 560, 420
    h = 60 + len(items) * (bar_h + gap) + 20
    cv = Canvas(left + width + 90, h)
    cv.text(10, 10, "EDGE VS NODE.JS SOCKET.IO: HOW MANY TIMES BETTER THE EDGE IS (>1 = EDGE AHEAD, GREY = WITHIN 5%)", scale=2)
    top = 40
    vmax = 3.0
    x1 = left + width * (1.0 / vmax)
    for i, (label, a) in enumerate(items):
        y = top + i * (bar_h + gap)
        cv.text(10, y + 2, label[:68], scale=2)
        length = width * min(a, vmax) / vmax
        color = (46, 139, 87) if a >= 1.05 else (200, 60, 50) if a < 0.95 else (150, 150, 150)
        cv.rect(left, y, left + length, y + bar_h, color)
        cv.text(left + length + 6, y + 2, f"{a:.2f}X", scale=2)
    cv.rect(x1, top - 4, x1 + 2, top + len(items) * (bar_h + gap), (0, 0, 0))
    with open(path, "wb") as f:
        f.write(cv.png())
