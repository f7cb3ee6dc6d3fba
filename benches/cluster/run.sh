#!/usr/bin/env bash
# Several instances sharing one map on this machine (SPEC §11): the release binary started as 1,
# 2 and 3 instances on one PostgreSQL database, regions at resolution 5 (a 30 × 30 km city falls
# into several), drivers put online on the instance owning their region, then `loadgen search`
# against the first instance (requests about another instance's region are forwarded; circles
# crossing a boundary ask the neighbour) — once at a fixed rate from 8 clients (latency) and once
# flat out from 50 (throughput); then `loadgen mixed` (driver sockets opened on the owner of each
# driver's region and following `moved`, trips run to completion with the PIN, searches) against
# the first instance.
#
#   benches/cluster/run.sh [target/release/hexdispatch] > results.md
#
# Needs PostgreSQL at $PG (default postgres://postgres@127.0.0.1:5432) with trust auth.
set -euo pipefail
BIN=${1:-target/release/hexdispatch}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
ONLINE=${ONLINE:-20000}
FIXED_RATE=${FIXED_RATE:-2000}
SECONDS_EACH=${SECONDS_EACH:-15}
MIXED_DRIVERS=${MIXED_DRIVERS:-3000}
TRIP_RATE=${TRIP_RATE:-10}
MIXED_RATE=${MIXED_RATE:-500}
mixed=()
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

summary() { python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["parts"]["search"]
print(f"{p['rps']:.0f} | {p['latency']['p50_ms']:.2f} | {p['latency']['p99_ms']:.2f} | "
      f"{sum(p['errors'].values())}")
PY
}

mixed_summary() { python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["parts"]
s, l, t = p["search"], p["locations"], p["trips"]
kinds = {}
for x in p.values():
    for k, v in x["errors"].items():
        kinds[k] = kinds.get(k, 0) + v
errors = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) or "0"
print(f"{s['rps']:.0f} searches/s, p99 {s['latency']['p99_ms']:.1f} ms | "
      f"{l['rps']:.0f} frames/s | {t['completed']} trips, p99 {t['latency']['p99_ms']:.0f} ms | {errors}")
PY
}

echo "| instances | run | searches/s | p50 ms | p99 ms | errors |"
echo "| ---: | --- | ---: | ---: | ---: | ---: |"
for n in 1 2 3; do
  db="hx_scale_$(date +%s)_$n"
  psql "$PG/postgres" -qc "CREATE DATABASE $db" >/dev/null
  ports=(18181 18182 18183)
  peers=""
  for ((i = 0; i < n; i++)); do
    peers+="${peers:+,}hx-$i=http://127.0.0.1:${ports[$i]}"
  done
  pids=()
  for ((i = 0; i < n; i++)); do
    env_cluster=()
    if ((n > 1)); then
      env_cluster=(HEXDISPATCH__CLUSTER__INSTANCE="hx-$i" HEXDISPATCH__CLUSTER__PEERS="$peers")
    fi
    env HEXDISPATCH__DATABASE__URL="$PG/$db" HEXDISPATCH__CLUSTER__REGION_RESOLUTION=5 \
      HEXDISPATCH__LOCATION__TTL_S=3600 HEXDISPATCH__LOG__LEVEL=warn "${env_cluster[@]}" \
      "$BIN" serve --host 127.0.0.1 --port "${ports[$i]}" >"$WORK/engine-$n-$i.log" 2>&1 &
    pids+=($!)
  done
  for ((i = 0; i < n; i++)); do
    for _ in $(seq 100); do
      curl -fs "http://127.0.0.1:${ports[$i]}/ready" >/dev/null && break
      sleep 0.2
    done
  done
  url="http://127.0.0.1:${ports[0]}"
  # Mixed first, before the search runs put their REST drivers online (idle REST drivers would
  # be offered trips they never answer).
  "$BIN" loadgen mixed --url "$url" --drivers "$MIXED_DRIVERS" --interval-ms 4000 \
    --trip-rate "$TRIP_RATE" --rate "$MIXED_RATE" --concurrency 8 --probe-rate 0 \
    --duration-s "$SECONDS_EACH" --out "$WORK/mixed-$n.json" >/dev/null || true
  mixed+=("| $n | $(mixed_summary "$WORK/mixed-$n.json") |")
  "$BIN" loadgen search --url "$url" --online "$ONLINE" --rate "$FIXED_RATE" --concurrency 8 \
    --duration-s "$SECONDS_EACH" --out "$WORK/fixed-$n.json" >/dev/null
  echo "| $n | $FIXED_RATE/s from 8 clients | $(summary "$WORK/fixed-$n.json") |"
  "$BIN" loadgen search --url "$url" --rate 100000 --duration-s "$SECONDS_EACH" \
    --out "$WORK/max-$n.json" >/dev/null
  echo "| $n | flat out, 50 clients | $(summary "$WORK/max-$n.json") |"
  for pid in "${pids[@]}"; do kill "$pid"; done
  wait "${pids[@]}" 2>/dev/null || true
  psql "$PG/postgres" -qc "DROP DATABASE $db WITH (FORCE)" >/dev/null
done
echo
echo "| instances | mixed: searches | driver frames | trips to completion | errors |"
echo "| ---: | --- | ---: | --- | ---: |"
printf '%s\n' "${mixed[@]}"
