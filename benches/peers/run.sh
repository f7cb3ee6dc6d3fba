#!/usr/bin/env bash
# Nearby side by side, in one run, on the same drivers: hexdispatch over HTTP (and its trivial
# route), Redis GEOSEARCH (a private redis-server) and PostGIS KNN on a GiST index (a database of
# its own on the local PostgreSQL), at 2 and 5 km, at the same concurrency.
#
#   benches/peers/run.sh [DRIVERS=100000] [CLIENTS=50] [SECONDS=10]
#
# Needs: a local PostgreSQL with trust auth for postgres@127.0.0.1 (PG_URL to override),
# redis-server on the PATH; installs postgresql-<version>-postgis-3 when the extension is
# missing. Writes target/peers/results.jsonl, results.md and nearby.svg.
set -euo pipefail
cd "$(dirname "$0")/../.."

DRIVERS=${1:-100000}
CLIENTS=${2:-50}
SECONDS_EACH=${3:-10}
PORT=${PEERS_ENGINE_PORT:-18090}
REDIS_PORT=${PEERS_REDIS_PORT:-6390}
PG_ADMIN=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_DB=hexdispatch_peers
PG_URL_DB=${PG_ADMIN%/*}/$PG_DB
OUT=target/peers
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

cargo build --release -j2 --bin hexdispatch --example peers
HX=target/release/hexdispatch
PEERS=target/release/examples/peers

PG_VERSION=$(psql "$PG_ADMIN" -Atc "SHOW server_version_num" | cut -c1-2)
if ! psql "$PG_ADMIN" -Atc "SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'" | grep -q 1; then
  echo "installing PostGIS for PostgreSQL $PG_VERSION"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "postgresql-$PG_VERSION-postgis-3" >/dev/null
fi
psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $PG_DB" -c "CREATE DATABASE $PG_DB" 2>/dev/null

redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir /tmp >/dev/null
WORK=$(mktemp -d)
cleanup() {
  kill "${ENGINE_PID:-0}" 2>/dev/null || true
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $PG_DB" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The engine on its embedded defaults (SQLite in a scratch directory), positions kept an hour so
# the drivers put online once stay fresh for the whole run.
(cd "$WORK" && HEXDISPATCH__HTTP__PORT=$PORT HEXDISPATCH__LOCATION__TTL_S=3600 \
  HEXDISPATCH__LOG__LEVEL=warn exec "$OLDPWD/$HX") > "$OUT/engine.log" 2>&1 &
ENGINE_PID=$!
URL=http://127.0.0.1:$PORT
for _ in $(seq 50); do curl -sf "$URL/health" >/dev/null && break; sleep 0.2; done

echo "putting $DRIVERS drivers online over REST"
"$HX" loadgen baseline --url "$URL" --online "$DRIVERS" --concurrency 50 --rate 10 \
  --duration-s 0.5 --positions-out "$WORK/positions.csv" >/dev/null
"$PEERS" load "$WORK/positions.csv" "redis://127.0.0.1:$REDIS_PORT" "$PG_URL_DB"

engine() { # scenario radius
  "$HX" loadgen "$1" --url "$URL" --rate 1000000 --concurrency "$CLIENTS" \
    --duration-s "$SECONDS_EACH" --radius "$2" |
    python3 -c "import json,sys; r=json.load(sys.stdin); print(json.dumps({'peer': 'hexdispatch ' + r['scenario'], 'radius_m': $2, 'clients': $CLIENTS, 'completed': r['completed'], 'rps': round(r['rps'], 1), 'p50_ms': r['latency']['p50_ms'], 'p99_ms': r['latency']['p99_ms'], 'max_ms': r['latency']['max_ms'], 'errors': sum(r['errors'].values())}))"
}
engine baseline 2000 | tee -a "$RESULTS"
for radius in 2000 5000; do
  engine search "$radius" | tee -a "$RESULTS"
  "$PEERS" redis "redis://127.0.0.1:$REDIS_PORT" "$radius" "$CLIENTS" "$SECONDS_EACH" | tee -a "$RESULTS"
  "$PEERS" postgis "$PG_URL_DB" "$radius" "$CLIENTS" "$SECONDS_EACH" 8 | tee -a "$RESULTS"
done

python3 benches/peers/report.py "$RESULTS" "$OUT/results.md" "$OUT/nearby.svg" "$DRIVERS"
cat "$OUT/results.md"
