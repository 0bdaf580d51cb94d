#!/usr/bin/env bash
# Redis memory per recorded click at N clicks (default 10^6), measured with INFO memory:
# N clicks shaped like the redirect's (distinct tokens, 1,000 notes, 200 creators, 50 items,
# 100k visitors) are appended as the group-commit writer does, GROUP clicks per stream entry
# (default 32; GROUP=1 gives one entry per click, as at low load), a gateway's aggregator turns them into click records,
# repeat markers, counters and HLLs (and trims the applied entries from the stream, as it does
# in service), then (used_memory after - before) / N is printed, with the shares of the
# stream, the click-record hashes and the repeat buckets (MEMORY USAGE). PER_MS clicks share
# each millisecond of token time (default 1, as at 1,000 clicks/s; 20 is 20,000 clicks/s):
# records of one ms share one hash field (docs/redis-schema.md).
# Usage: [GROUP=32] [PER_MS=1] loadtest/scripts/redis-memory.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
# Binaries: cargo's target directory (CARGO_TARGET_DIR when set).
BIN_DIR=${CARGO_TARGET_DIR:-target}/release
N=${1:-1000000}
GROUP=${GROUP:-32}
PER_MS=${PER_MS:-1}
cargo build --release --bin linkloop -q
WORK=$(mktemp -d)
PORT=18399
trap 'redis-cli -p $PORT shutdown nosave >/dev/null 2>&1 || true; kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
redis-server --port $PORT --save '' --appendonly no --daemonize yes --dir "$WORK" --logfile "$WORK/redis.log"
sleep 0.5
R="redis-cli -p $PORT"
BEFORE=$($R info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
NOW_MS=$(($(date +%s) * 1000))
# Append N entries in chunks of 10,000 (one Lua call each), in the exact format of src/store (tok, rec).
for ((start = 0; start < N; start += 10000)); do
  $R eval "
    local start, n, now, group, per_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
    local fields = {}
    for i = start, start + n - 1 do
      -- A UUID v7 whose time is the click's (per_ms clicks per ms from now), like the gateway mints.
      local ts = now + math.floor(i / per_ms)
      local tok = string.format('%08x-%04x-7%03x-8%03x-%012x', math.floor(ts / 65536), ts % 65536, i % 4096, (i * 7) % 4096, i)
      local rec = '1|' .. ts .. '|' .. string.format('%024x', i % 1000) .. '|creator' .. (i % 200) ..
        '|taobao|' .. (567873872517 + i % 50) .. '|||' .. string.format('%016x', (i * 2654435761) % 100000) ..
        '|app|www.xiaohongshu.com'
      fields[#fields + 1] = 'tok'; fields[#fields + 1] = tok; fields[#fields + 1] = 'rec'; fields[#fields + 1] = rec
      if #fields == 4 * group or i == start + n - 1 then
        redis.call('XADD', 'll:clicks', 'MAXLEN', '~', math.floor(2000000 / (#fields / 4)), '*', unpack(fields))
        fields = {}
      end
    end
    return 1" 0 $start $((N - start < 10000 ? N - start : 10000)) $NOW_MS $GROUP $PER_MS >/dev/null
done
AFTER_STREAM=$($R info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
# A gateway (aggregator only) turns the stream into records, counters and HLLs.
cat > "$WORK/agg.toml" <<TOML
listen = "127.0.0.1:18398"
data_dir = "$WORK/data"
redis_url = "redis://127.0.0.1:$PORT/"
TOML
"$BIN_DIR"/linkloop serve --config "$WORK/agg.toml" >"$WORK/gw.log" 2>&1 &
LAST=""
for _ in $(seq 600); do
  CUR=$($R get ll:agg:cursor)
  TAIL=$($R xrevrange ll:clicks + - COUNT 1 | head -1)
  [ -n "$CUR" ] && [ "$CUR" = "$TAIL" ] && break
  sleep 0.5
done
AFTER=$($R info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
STREAM=$($R memory usage ll:clicks SAMPLES 0)
# A record is a line of a field of an `ll:crs:{minute}` hash.
RECORDS=$($R eval "local n = 0 for _, k in ipairs(redis.call('keys', 'll:crs:*')) do for _, v in ipairs(redis.call('hvals', k)) do local _, c = string.gsub(v, '\n', '') n = n + c end end return n" 0)
RECORD_BYTES=$($R eval "local n = 0 for _, k in ipairs(redis.call('keys', 'll:crs:*')) do n = n + redis.call('memory', 'usage', k, 'SAMPLES', 0) end return n" 0)
REPEAT_BYTES=$($R eval "local n = 0 for _, k in ipairs(redis.call('keys', 'll:rpt:*')) do n = n + redis.call('memory', 'usage', k, 'SAMPLES', 0) end return n" 0)
echo "clicks: $N in $($R xlen ll:clicks) entries ($GROUP per entry, $PER_MS per ms), click records: $RECORDS, aggregation: $($R get ll:agg:cursor)"
echo "used_memory: before=$BEFORE after_stream=$AFTER_STREAM after_aggregation=$AFTER"
echo "stream (MEMORY USAGE ll:clicks): $STREAM bytes = $((STREAM / N)) bytes/click"
echo "click records (MEMORY USAGE ll:crs:*): $RECORD_BYTES bytes = $((RECORD_BYTES / N)) bytes/click"
echo "repeat markers (MEMORY USAGE ll:rpt:*): $REPEAT_BYTES bytes = $((REPEAT_BYTES / N)) bytes/click"
echo "total per recorded click: $(((AFTER - BEFORE) / N)) bytes (stream + click record + repeat marker + counters/HLLs)"
