#!/usr/bin/env bash
# Memory under a flood of distinct client IPs: a trusted proxy (127.0.0.1) forwards
# requests from random X-Forwarded-For addresses for DURATION seconds; prints the
# gateway's RSS and the per-IP limiter key count before, right after, and after the
# limiter state has aged out and been pruned (every 10 s; a key is dropped once its
# bucket is full again, at most one minute later).
# Usage: loadtest/scripts/ip-flood.sh [duration_s=15]
set -euo pipefail
cd "$(dirname "$0")/../.."
# Binaries: cargo's target directory (CARGO_TARGET_DIR when set).
BIN_DIR=${CARGO_TARGET_DIR:-target}/release
DUR=${1:-15}
cargo build --release --bin linkloop -q
WORK=$(mktemp -d)
PORT=18310
trap 'kill $(jobs -p) 2>/dev/null; sleep 0.5; rm -rf "$WORK"' EXIT
cat > "$WORK/flood.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$WORK/data"
trusted_proxies = ["127.0.0.1/32"]
TOML
"$BIN_DIR"/linkloop serve --config "$WORK/flood.toml" >"$WORK/gw.log" 2>&1 &
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
GW=$(pgrep -f "linkloop serve --config $WORK/flood.toml" | head -1)
LINK=$("$BIN_DIR"/linkloop mint --config "$WORK/flood.toml" --note 65682d4500000000380339a5 --creator flood \
  --url 'https://item.taobao.com/item.htm?id=533000737918' 2>/dev/null)
cat > "$WORK/flood.lua" <<'LUA'
math.randomseed(os.time())
request = function()
  local ip = string.format("%d.%d.%d.%d", math.random(1, 223), math.random(0, 255), math.random(0, 255), math.random(1, 254))
  return wrk.format("GET", nil, { ["X-Forwarded-For"] = ip, ["User-Agent"] = "Mozilla/5.0 (iPhone) Mobile" })
end
LUA
keys() { curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^linkloop_rate_limiter_keys / {print $2}'; }
rss() { awk '/VmRSS/ {print $2 " kB"}' /proc/$GW/status; }
echo "before:        rss=$(rss) limiter_keys=$(keys)"
wrk -t1 -c64 -d"${DUR}s" -s "$WORK/flood.lua" "$LINK" | grep -E "Requests/sec|requests in"
echo "after flood:   rss=$(rss) limiter_keys=$(keys)"
sleep 75
echo "after pruning: rss=$(rss) limiter_keys=$(keys)"
