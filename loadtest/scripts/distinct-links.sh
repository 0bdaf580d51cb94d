#!/usr/bin/env bash
# Does the redirect's rate depend on how many distinct tracked links are clicked? Links are
# stateless and signed, so the redirect itself keeps nothing per link; this measures it.
# linkloop (one Tokio worker) and its redis-server are pinned to CPU 0, wrk to CPU 1, per-IP
# limits lifted as in compare.sh. `linkloop mint --count` mints 1 link and N links (same
# product and creator; VARY=campaign (default): one note, N distinct campaign tags, so only the
# links differ; VARY=note: N distinct note ids, so the aggregator also keeps N per-note counters
# and HyperLogLogs); after a 2 s warm-up, wrk clicks the single link,
# the N links (a random one per request), and the single link again. All three runs use the
# same wrk Lua script (distinct-links.lua), so wrk's own per-request cost is the same in each.
# After each run the script waits (at most 20 s) until the aggregator has applied every click,
# so the next run starts from an idle Redis. Also printed per run: the drain time, CPU time of
# the gateway and of redis-server (with its forked AOF-rewrite children) per request, from the
# run's start to the end of its drain, forks (AOF rewrites) in that span, and Redis' key count
# and memory after it. The aggregator is off the hot path but on the same CPU, and it keeps
# counters and a HyperLogLog per note and day, so distinct notes cost it more.
# AGGREGATOR=off runs the gateway with aggregator_enabled = false: only the redirect's own work.
# Usage: [AGGREGATOR=off] [VARY=campaign|note] loadtest/scripts/distinct-links.sh [duration_s=10] [N=1000000]
set -euo pipefail
cd "$(dirname "$0")/../.."
# Binaries: cargo's target directory (CARGO_TARGET_DIR when set).
BIN_DIR=${CARGO_TARGET_DIR:-target}/release
DUR=${1:-10}
N=${2:-1000000}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
for bin in wrk redis-server; do
  command -v $bin >/dev/null 2>&1 || { $SUDO apt-get update -qq; $SUDO apt-get install -y -qq wrk redis-server >/dev/null; break; }
done
cargo build --release --bin linkloop -q
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; sleep 0.5; rm -rf "$WORK"' EXIT

PORT=18330
# wrk sends everything from 127.0.0.1: lift the per-client click limits so the redirect is
# measured, not the 429 page.
cat > "$WORK/linkloop.toml" <<TOML
click_soft_limit_per_minute = 1000000000
click_hard_limit_per_minute = 1000000000
TOML
[ "${AGGREGATOR:-on}" = off ] && echo "aggregator_enabled = false" >>"$WORK/linkloop.toml"
export LINKLOOP_DATA_DIR="$WORK/data" LINKLOOP_LISTEN="127.0.0.1:$PORT" LINKLOOP_WORKER_THREADS=1
taskset -c 0 "$BIN_DIR"/linkloop serve --config "$WORK/linkloop.toml" >"$WORK/linkloop.log" 2>&1 &
GW=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "linkloop did not start:"; cat "$WORK/linkloop.log"; exit 1; }

mint() {
  "$BIN_DIR"/linkloop mint --config "$WORK/linkloop.toml" --note 65682d4500000000380339a5 \
    --creator bench_creator --url 'https://item.taobao.com/item.htm?id=533000737918' "$@" 2>/dev/null
}
mint >"$WORK/links-1.txt"
START=$(date +%s.%N)
mint --count "$N" --vary "${VARY:-campaign}" >"$WORK/links-N.txt"
echo "minted $(wc -l <"$WORK/links-N.txt") links (distinct ${VARY:-campaign}s) in $(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN {printf "%.2f", e - s}') s"

REDIS_CLI="redis-cli -s $WORK/data/redis/redis.sock"
# Seconds until the aggregator's cursor reaches the stream's last entry (at most 20 s).
drain() {
  local start last
  start=$(date +%s.%N)
  [ "${AGGREGATOR:-on}" = off ] && { echo "-"; return; }
  for _ in $(seq 200); do
    last=$($REDIS_CLI XINFO STREAM ll:clicks 2>/dev/null | awk 'prev == "last-generated-id" {print; exit} {prev = $0}')
    [ -n "$last" ] && [ "$($REDIS_CLI GET ll:agg:cursor)" = "$last" ] && break
    sleep 0.1
  done
  awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}'
}
mem() { $REDIS_CLI INFO memory | awk -F: '/^used_memory_human/ {sub(/\r/, "", $2); print $2}'; }
TICK=$(getconf CLK_TCK)
# CPU seconds so far: gw (the gateway), redis (with children), forks (count).
cpu() {
  case $1 in
    gw) awk -v t="$TICK" '{printf "%.3f", ($14 + $15) / t}' "/proc/$GW/stat" ;;
    redis) $REDIS_CLI INFO cpu | awk -F: '/^used_cpu_(sys|user)(_children)?:/ {s += $2} END {printf "%.3f", s}' ;;
    forks) $REDIS_CLI INFO stats | awk -F: '/^total_forks:/ {print $2 + 0}' ;;
  esac
}

# A phone browser: without a browser-like User-Agent the gateway records a bot (non-billable).
UA='Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148'
# run NAME LINKS_FILE: one wrk run; results in $WORK/NAME.{wrk,drain,keys,mem,cpu}.
run() {
  echo "== $1: $(wc -l <"$2") distinct link(s) =="
  local gw0 redis0 forks0
  gw0=$(cpu gw); redis0=$(cpu redis); forks0=$(cpu forks)
  LINKS="$2" taskset -c 1 wrk -t1 -c64 -d"${DUR}s" --latency -H "User-Agent: $UA" \
    -s loadtest/scripts/distinct-links.lua "http://127.0.0.1:$PORT/" >"$WORK/$1.wrk"
  grep -E "Requests/sec| 99%|status|Socket errors|links loaded" "$WORK/$1.wrk"
  drain >"$WORK/$1.drain"
  # gateway µs/request, redis µs/request, forks
  awk -v g0="$gw0" -v g1="$(cpu gw)" -v r0="$redis0" -v r1="$(cpu redis)" -v f0="$forks0" -v f1="$(cpu forks)" \
    -v n="$(awk '/requests in/ {print $1}' "$WORK/$1.wrk")" \
    'BEGIN { if (n > 0) printf "%.1f %.1f %d\n", 1e6 * (g1 - g0) / n, 1e6 * (r1 - r0) / n, f1 - f0; else print "- - -" }' \
    >"$WORK/$1.cpu"
  $REDIS_CLI DBSIZE >"$WORK/$1.keys"
  mem >"$WORK/$1.mem"
}
rps() { awk '/Requests\/sec/ {print $2}' "$WORK/$1.wrk"; }
p99() { awk '/ 99%/ {print $2}' "$WORK/$1.wrk"; }
# Responses other than 302 (a rejected link would be a 404, and far cheaper).
other() { awk '/^status / {sub(":", "", $2); if ($2 != 302) n += $3} END {print n + 0}' "$WORK/$1.wrk"; }

# Warm-up (not reported): connections, allocator, Redis' first keys.
LINKS="$WORK/links-1.txt" taskset -c 1 wrk -t1 -c64 -d2s -H "User-Agent: $UA" \
  -s loadtest/scripts/distinct-links.lua "http://127.0.0.1:$PORT/" >/dev/null
drain >/dev/null
run single1 "$WORK/links-1.txt"
run many "$WORK/links-N.txt"
run single2 "$WORK/links-1.txt"

echo
echo "aggregator: ${AGGREGATOR:-on}; cpu = CPU µs per request, run + drain"
printf "%-18s %10s %9s %7s %7s %7s %9s %5s %10s %9s\n" run "req/s" p99 non-302 "drain s" "gw cpu" "redis cpu" forks "redis keys" "redis mem"
for r in single1 many single2; do
  case $r in single1) label="1 link (before)" ;; many) label="$N links" ;; single2) label="1 link (after)" ;; esac
  read -r gwc rc fk <"$WORK/$r.cpu"
  printf "%-18s %10s %9s %7s %7s %7s %9s %5s %10s %9s\n" "$label" "$(rps $r)" "$(p99 $r)" "$(other $r)" \
    "$(cat "$WORK/$r.drain")" "$gwc" "$rc" "$fk" "$(cat "$WORK/$r.keys")" "$(cat "$WORK/$r.mem")"
done
awk -v a="$(rps single1)" -v b="$(rps single2)" -v m="$(rps many)" -v n="$N" 'BEGIN {
  s = (a + b) / 2
  if (s > 0) printf "ratio %s links / 1 link: %.1f%% (1-link mean %.0f req/s; before/after differ by %.1f%%)\n",
    n, 100 * m / s, s, 100 * (a > b ? a - b : b - a) / s
}'
