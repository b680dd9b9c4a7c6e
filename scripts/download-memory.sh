#!/usr/bin/env bash
# The coordinator's memory under a crowd of downloads: a coordinator, a worker and the API
# on this machine; a synthetic batch with a large equity table; then 50 downloads of it at
# once over HTTP. Prints the coordinator's resident memory before, at its peak and after,
# for --max-downloads as given (default: 4, then 1000 for the unbounded case).
# Usage: scripts/download-memory.sh [MAX_DOWNLOADS...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bins -q
bin=target/debug
work=$(mktemp -d /tmp/xt-downloads.XXXXXX)
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_for() { for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.1; done; echo "timed out: $2 in $1" >&2; exit 1; }
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
secret=$(head -c 48 /dev/urandom | base64 | tr -d '=+/')
printf '%s' "$secret" > "$work/jwt"
printf '| max downloads | table MB | before MB | peak MB | after MB | seconds |\n|---|---|---|---|---|---|\n'
for most in "${@:-4 1000}"; do
  for m in $most; do
    state="$work/state-$m"
    "$bin/xt-coordinator" --state "$state" --listen 127.0.0.1:0 --max-downloads "$m" \
      --data-root "$work" > "$work/c-$m.log" 2>&1 & c=$!; pids+=($c)
    wait_for "$work/c-$m.log" "listening on"
    url="http://$(awk '/listening on/ {print $3}' "$work/c-$m.log")"
    "$bin/xt-worker" --coordinator "$url" > "$work/w-$m.log" 2>&1 & pids+=($!)
    XT_JWT_SECRET_FILE="$work/jwt" "$bin/xt" serve --coordinator "$url" --listen 127.0.0.1:0 \
      > "$work/a-$m.log" 2>&1 & pids+=($!)
    wait_for "$work/a-$m.log" "listening on"
    api="http://$(awk '/listening on/ {print $3}' "$work/a-$m.log")"
    token=$(XT_JWT_SECRET_FILE="$work/jwt" "$bin/xt" token --tenant t --role researcher)
    id=$(curl -sf -H "authorization: Bearer $token" -H 'content-type: application/json' \
      -d '{"data": "synthetic://?symbols=300&years=10&seed=1", "strategy": "sma_cross", "tables": ["metrics", "equity", "portfolio"]}' \
      "$api/v1/batches" | sed 's/.*"id":\([0-9]*\).*/\1/')
    until curl -sf -H "authorization: Bearer $token" "$api/v1/batches/$id" | grep -q '"state":"done"'; do sleep 0.2; done
    size=$(du -m "$state/batches/$id/equity.parquet" | cut -f1)
    sleep 1
    before=$(kib $c VmRSS)
    echo 5 > "/proc/$c/clear_refs"  # the peak from here on
    start=$(date +%s.%N)
    downloads=()
    for _ in $(seq 50); do
      curl -sf -o /dev/null -H "authorization: Bearer $token" \
        "$api/v1/batches/$id/results/equity?format=parquet" & downloads+=($!)
    done
    wait "${downloads[@]}"
    end=$(date +%s.%N)
    sleep 2
    after=$(kib $c VmRSS); peak=$(kib $c VmHWM)
    printf '| %s | %s | %d | %d | %d | %.1f |\n' "$m" "$size" $((before / 1024)) $((peak / 1024)) \
      $((after / 1024)) "$(echo "$end - $start" | bc)"
    kill -9 "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true; pids=()
  done
done
