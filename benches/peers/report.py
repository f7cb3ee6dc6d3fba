"""Turns benches/peers/run.sh's results.jsonl into a markdown table and an SVG bar chart."""
import json
import math
import sys

results, table_path, svg_path, drivers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = [json.loads(line) for line in open(results) if line.strip()]
by = {(r["peer"], r["radius_m"]): r for r in rows}
health = by.get(("hexdispatch baseline", 2000))

lines = [
    f"Nearest 5 over {int(drivers):,} drivers in a 30 × 30 km city, {rows[0]['clients']} clients as fast as they go:",
    "",
    "| radius | what | req/s | p50 ms | p99 ms | errors | hexdispatch ÷ it |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
]
if health:
    lines.append(
        f"| — | hexdispatch `GET /health` | {health['rps']:,.0f} | {health['p50_ms']:.2f} | {health['p99_ms']:.2f} | {health['errors']} | |"
    )
for radius in (2000, 5000):
    engine = by.get(("hexdispatch search", radius))
    if not engine:
        continue
    share = f" ({engine['rps'] / health['rps']:.0%} of /health)" if health else ""
    lines.append(
        f"| {radius // 1000} km | hexdispatch nearby{share} | {engine['rps']:,.0f} | {engine['p50_ms']:.2f} | {engine['p99_ms']:.2f} | {engine['errors']} | |"
    )
    for peer, name in (("redis", "Redis GEOSEARCH"), ("postgis", "PostGIS KNN, 8 connections")):
        r = by.get((peer, radius))
        if r:
            lines.append(
                f"| {radius // 1000} km | {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | {engine['rps'] / max(r['rps'], 0.001):.1f}× |"
            )
open(table_path, "w").write("\n".join(lines) + "\n")

# Bars on a log scale: the peers differ by orders of magnitude.
bars = [(f"{r['peer']} {r['radius_m'] // 1000} km", r["rps"]) for r in rows]
w, bar_h, pad, label_w = 760, 26, 10, 230
h = pad * 2 + bar_h * len(bars) + 30
top = max(math.log10(max(v, 1)) for _, v in bars)
out = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
    f'<text x="{pad}" y="16">nearest 5, requests/s (log scale), {int(drivers):,} drivers, same machine, same clients</text>',
]
for i, (label, v) in enumerate(bars):
    y = 30 + i * bar_h
    length = (w - label_w - 90) * math.log10(max(v, 1)) / top
    colour = "#3182bd" if label.startswith("hexdispatch") else "#bdbdbd"
    out.append(f'<text x="{pad}" y="{y + 16}">{label}</text>')
    out.append(f'<rect x="{label_w}" y="{y + 4}" width="{length:.1f}" height="{bar_h - 8}" fill="{colour}"/>')
    out.append(f'<text x="{label_w + length + 6:.1f}" y="{y + 16}">{v:,.0f}</text>')
out.append("</svg>")
open(svg_path, "w").write("\n".join(out) + "\n")
