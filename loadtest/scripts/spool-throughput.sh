#!/usr/bin/env bash
# Spool throughput: the gateway with its Redis unreachable, so every click goes to the
# durable spool (fsynced before its 302). Prints wrk's requests/s and p99, and from
# /metrics the clicks spooled and the fdatasync calls that carried them (group commit).
# Usage: loadtest/scripts/spool-throughput.sh [duration_s=10] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/../.."
# Binaries: cargo's target directory (CARGO_TARGET_DIR when set).
BIN_DIR=${CARGO_TARGET_DIR:-target}/release
DUR=${1:-10}
CONNS=${2:-64}
cargo build --release --bin linkloop -q
WORK=$(mktemp -d)
PORT=18320
DEAD=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
trap 'kill $(jobs -p) 2>/dev/null; sleep 0.5; rm -rf "$WORK"' EXIT
cat > "$WORK/spool.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$WORK/data"
redis_url = "redis://127.0.0.1:$DEAD/"
click_soft_limit_per_minute = 100000000
click_hard_limit_per_minute = 100000000
TOML
LINKLOOP_WORKER_THREADS=1 taskset -c 0 "$BIN_DIR"/linkloop serve --config "$WORK/spool.toml" >"$WORK/gw.log" 2>&1 &
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
LINK=$("$BIN_DIR"/linkloop mint --config "$WORK/spool.toml" --note 65682d4500000000380339a5 --creator spool \
  --url 'https://item.taobao.com/item.htm?id=533000737918' 2>/dev/null)
taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -H 'User-Agent: Mozilla/5.0 (iPhone) Mobile' "$LINK" | grep -E "Requests/sec| 99%|Non-2xx"
M=$(curl -s "http://127.0.0.1:$PORT/metrics")
SPOOLED=$(echo "$M" | awk '/^linkloop_clicks_spooled_total / {print $2}')
FSYNCS=$(echo "$M" | awk '/^linkloop_spool_fsyncs_total / {print $2}')
DROPPED=$(echo "$M" | awk '/^linkloop_clicks_dropped_total/ {s+=$2} END {print s+0}')
echo "clicks spooled: $SPOOLED in ${DUR}s = $((${SPOOLED%.*} / DUR))/s; fdatasync calls: $FSYNCS = $((${FSYNCS%.*} / DUR))/s; clicks per fsync: $(awk -v a="$SPOOLED" -v b="$FSYNCS" 'BEGIN {printf "%.1f", a/b}'); dropped: $DROPPED"
du -sh "$WORK/data/spool"
