#!/usr/bin/env python3
"""Greedy against batched across supply ratios and windows, with `hexdispatch simulate`.

Usage: benches/simulate/table.py [path/to/hexdispatch] > table.md

The supply ratio is drivers over the drivers the demand keeps busy:
rho = drivers / (requests_per_min * busy_min), busy_min being the mean minutes a matched trip
holds its driver under greedy at that demand (answering, pickup and ride). For each rho the
request rate is found by fixed-point iteration on greedy runs; then every policy runs on the same
request stream (same seed). Figures are means over the seeds.
"""
import json
import os
import subprocess
import sys

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/hexdispatch"
DRIVERS = 1000
MINUTES, WARMUP = 120, 30
SEEDS = [1, 2, 3]
RATIOS = [0.8, 1.0, 1.2, 2.0, 5.0]
# (mode, window ms, matching.batch_size): greedy and sequential are the engine's broadcast and
# sequential modes; the last row continues a batched trip one offer at a time.
POLICIES = [("greedy", None, 5), ("sequential", None, 5), ("batched", 1000, 5),
            ("batched", 2000, 5), ("batched", 5000, 5), ("batched", 2000, 1)]


def simulate(mode, rate, seed, window=None, batch=5):
    args = [BIN, "simulate", "--mode", mode, "--drivers", str(DRIVERS),
            "--requests-per-min", f"{rate:.3f}", "--minutes", str(MINUTES),
            "--warmup-minutes", str(WARMUP), "--seed", str(seed)]
    if window:
        args += ["--window-ms", str(window)]
    env = dict(os.environ, HEXDISPATCH__MATCHING__BATCH_SIZE=str(batch))
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out)


def averaged(mode, rate, window=None, batch=5):
    runs = [simulate(mode, rate, s, window, batch) for s in SEEDS]
    keys = ["mean_pickup_m", "p95_pickup_m", "mean_wait_s", "p95_wait_s", "share_matched",
            "mean_match_s", "mean_busy_s", "mean_idle_drivers", "mean_waiting_riders", "offers",
            "requests"]
    return {k: sum(r[k] for r in runs) / len(runs) for k in keys}


def rate_for(rho):
    rate = DRIVERS / (rho * 20.0)
    for _ in range(4):
        busy_min = averaged("greedy", rate)["mean_busy_s"] / 60.0
        rate = DRIVERS / (rho * busy_min)
    return rate


print(f"{DRIVERS} drivers, 10 × 10 km, 25 km/h, answers in 2–6 s, 90 % accepted; "
      f"{MINUTES} simulated minutes, the first {WARMUP} left out; means over seeds {SEEDS}.\n")
print("| supply ratio | requests/min | idle drivers per waiting rider (greedy) | policy "
      "| mean pickup | p95 pickup | mean wait | p95 wait | mean request → driver | matched "
      "| offers per request |")
print("| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for rho in RATIOS:
    rate = rate_for(rho)
    base = None
    for mode, window, batch in POLICIES:
        r = averaged(mode, rate, window, batch)
        if base is None:
            base = r
            ratio = r["mean_idle_drivers"] / max(r["mean_waiting_riders"], 1e-9)
            label = "greedy"
            change = ""
        else:
            label = f"batched {window // 1000} s" if window else mode
            if batch == 1 and mode == "batched":
                label += ", then one at a time"
            delta = (r["mean_pickup_m"] / base["mean_pickup_m"] - 1.0) * 100.0
            change = f" ({delta:+.0f} %)"
        print(f"| {rho:g} | {rate:.1f} | {ratio:.2f} | {label} "
              f"| {r['mean_pickup_m']:.0f} m{change} | {r['p95_pickup_m']:.0f} m "
              f"| {r['mean_wait_s']:.0f} s | {r['p95_wait_s']:.0f} s | {r['mean_match_s']:.1f} s "
              f"| {r['share_matched'] * 100:.1f} % | {r['offers'] / r['requests']:.2f} |")
        sys.stdout.flush()
