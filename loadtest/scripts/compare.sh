#!/usr/bin/env bash
# Same-sitting comparison of the redirect against an nginx `return 302` baseline.
# Server side (nginx, or linkloop + its redis-server) is pinned to CPU 0, wrk to CPU 1.
# Usage: loadtest/scripts/compare.sh [duration_s=10] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-10}
CONNS=${2:-64}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
for bin in nginx wrk redis-server; do
  command -v $bin >/dev/null 2>&1 || { $SUDO apt-get update -qq; $SUDO apt-get install -y -qq nginx wrk redis-server >/dev/null; break; }
done
cargo build --release --bin linkloop -q
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; sleep 0.5; rm -rf "$WORK"' EXIT

NGINX_PORT=18302
LL_PORT=18303
cat > "$WORK/nginx.conf" <<NGX
worker_processes 1;
daemon on;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { return 302 https://item.taobao.com/item.htm?id=533000737918; }
  }
}
NGX
taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK"
sleep 0.5

export LINKLOOP_DATA_DIR="$WORK/data" LINKLOOP_LISTEN="127.0.0.1:$LL_PORT" TOKIO_WORKER_THREADS=1
taskset -c 0 ./target/release/linkloop serve >"$WORK/linkloop.log" 2>&1 &
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$LL_PORT/readyz" >/dev/null && break; sleep 0.1; done
LINK=$(./target/release/linkloop mint --note 65682d4500000000380339a5 --creator bench_creator \
  --url 'https://item.taobao.com/item.htm?id=533000737918')

run_wrk() { taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$1" | tee -a "$WORK/wrk.txt"; }
rps() { awk '/Requests\/sec/ {print $2}'; }
p99() { awk '/ 99%/ {print $2}'; }

echo "== nginx return 302 =="; N=$(run_wrk "http://127.0.0.1:$NGINX_PORT/j/x")
echo "$N" | grep -E "Requests/sec| 99%|Non-2xx"
echo "== linkloop /j/{link} (clicks recorded in Redis, appendonly everysec) =="; L=$(run_wrk "$LINK")
echo "$L" | grep -E "Requests/sec| 99%|Non-2xx|Socket errors"
REDIS_CLI="redis-cli -s $WORK/data/redis/redis.sock"
CLICKS=$($REDIS_CLI XLEN ll:clicks)
NR=$(echo "$N" | rps); LR=$(echo "$L" | rps)
echo
printf "%-28s %12s %10s\n" target "req/s" p99
printf "%-28s %12s %10s\n" "nginx return 302" "$NR" "$(echo "$N" | p99)"
printf "%-28s %12s %10s\n" "linkloop /j/{link}" "$LR" "$(echo "$L" | p99)"
echo "ratio linkloop/nginx: $(awk -v a="$LR" -v b="$NR" 'BEGIN {printf "%.1f%%", 100*a/b}')"
echo "clicks in stream: $CLICKS"
$REDIS_CLI INFO commandstats | grep -E "cmdstat_(xadd|evalsha|xreadgroup)" || true
