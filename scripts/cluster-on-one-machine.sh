#!/usr/bin/env bash
# The distributed mode by hand, as separate processes on this machine: 3 etcd members, an
# S3-compatible server (moto) holding the market data and the results, 2 coordinators,
# 3 workers and the API. It submits a grid batch over the CSI 300 data, kills the leader
# with SIGKILL mid-batch, then a worker, restarts an etcd member, waits for the batch and
# downloads its metrics. Everything lives in a temporary directory and stops on exit.
#
# Needs: etcd (Debian's etcd-server), moto_server and boto3 (pip install 'moto[server]'),
# curl; data: DATA=dir of SYMBOL.csv files (default ../shared/data/cn-csi300 beside the
# checkout). Usage: scripts/cluster-on-one-machine.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
[[ "${1:-}" == --release ]] && profile=release
DATA=${DATA:-../shared/data/cn-csi300}
PYTHON=${PYTHON:-$(dirname "$(command -v moto_server)")/python3}
for tool in etcd moto_server curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool on PATH" >&2; exit 1; }
done
[[ -d "$DATA" ]] || { echo "no data directory $DATA (set DATA=)" >&2; exit 1; }
cargo build --bins $([[ $profile == release ]] && echo --release) -q
bin=target/$profile
work=$(mktemp -d /tmp/xt-cluster.XXXXXX)
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; echo "logs kept in $work"; }
trap cleanup EXIT
port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for FILE PATTERN: until the log says it (a minute at most)
  for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.1; done
  echo "timed out waiting for '$2' in $1" >&2; exit 1
}

echo "== etcd: 3 members"
cluster="" ; declare -a client_urls peer_urls
for i in 0 1 2; do
  client_urls[$i]="http://127.0.0.1:$(port)"; peer_urls[$i]="http://127.0.0.1:$(port)"
  cluster+="m$i=${peer_urls[$i]},"
done
etcd_member() {
  etcd --name "m$1" --data-dir "$work/etcd-$1" --listen-client-urls "${client_urls[$1]}" \
    --advertise-client-urls "${client_urls[$1]}" --listen-peer-urls "${peer_urls[$1]}" \
    --initial-advertise-peer-urls "${peer_urls[$1]}" --initial-cluster "${cluster%,}" \
    --initial-cluster-state "$2" >"$work/etcd-$1.log" 2>&1 &
  etcd_pids[$1]=$!; pids+=($!); disown $!
}
declare -a etcd_pids
for i in 0 1 2; do etcd_member "$i" new; done
ETCD=$(IFS=,; echo "${client_urls[*]}")

echo "== S3 (moto) with the data from $DATA"
s3="http://127.0.0.1:$(port)"
moto_server -H 127.0.0.1 -p "${s3##*:}" >"$work/moto.log" 2>&1 & pids+=($!); disown $!
export AWS_ENDPOINT=$s3 AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
for _ in $(seq 100); do curl -s -o /dev/null "$s3" && break; sleep 0.1; done
"$PYTHON" - "$DATA" "$s3" <<'PY'
import pathlib, sys, boto3
data, endpoint = pathlib.Path(sys.argv[1]), sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
s3.create_bucket(Bucket="xt-data")
files = sorted(data.glob("*.csv"))
for f in files:
    s3.upload_file(str(f), "xt-data", f"cn/{f.name}")
print(f"uploaded {len(files)} files to s3://xt-data/cn")
PY

echo "== 2 coordinators, 3 workers, the API"
head -c 32 /dev/urandom | base64 | tr -d '=+/' >"$work/cluster.secret"
export XT_CLUSTER_SECRET_FILE=$work/cluster.secret XT_ETCD=$ETCD XT_JWT_SECRET=by-hand-secret-0123456789-0123456789
coordinator() {
  "$bin/xt-coordinator" --listen 127.0.0.1:0 --leader-ttl-secs 2 --lease-ms 3000 \
    --state "$work/coord-$1" --results s3://xt-data/results --data-root s3://xt-data/cn \
    --data-cache "$work/cache" >"$work/coord-$1.out" 2>"$work/coord-$1.log" &
  coord_pids[$1]=$!; pids+=($!); disown $!
}
declare -A coord_pids
declare -a worker_pids
coordinator a; wait_for "$work/coord-a.out" "role: leader"
coordinator b; wait_for "$work/coord-b.out" "role: standby"
for w in 1 2 3; do
  "$bin/xt-worker" --slots 1 --member-ttl-secs 3 --data-cache "$work/cache" 2>"$work/worker-$w.log" &
  worker_pids[$w]=$!; pids+=($!); disown $!
done
"$bin/xt" serve --listen 127.0.0.1:0 >"$work/api.out" 2>"$work/api.log" & pids+=($!); disown $!
wait_for "$work/api.out" "listening on"
api="http://$(sed -n 's/^listening on //p' "$work/api.out" | head -1)"
token=$("$bin/xt" token --tenant desk1 --role researcher --sub you)

echo "== submit: MACD over the CSI 300's point-in-time members, fast in 8..16"
spec='{"data": "s3://xt-data/cn", "universe": {"file": "universe_pit.csv"}, "strategy": "macd",
       "start": "2017-01-01", "end": "2024-12-31", "grid": {"fast": [8, 10, 12, 14, 16]}}'
id=$(curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  -d "$spec" "$api/v1/batches" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "batch $id"
status() { curl -s -H "Authorization: Bearer $token" "$api/v1/batches/$id"; }
sleep 1
echo "== SIGKILL the leader; then a worker; then restart an etcd member"
kill -9 "${coord_pids[a]}"; wait_for "$work/coord-b.out" "role: leader"
echo "standby leads: $(grep 'role: leader' "$work/coord-b.out")"
kill -9 "${worker_pids[1]}"
kill -9 "${etcd_pids[2]}"; sleep 1; etcd_member 2 existing
until status | grep -q '"state":"done"'; do
  # While no coordinator leads, the API answers 503 (retryable): shown as it comes.
  status | "$PYTHON" -c 'import json,sys; s=json.load(sys.stdin); print("  ", s.get("state"), s.get("counts") or s.get("error"))' || true
  sleep 2
done
echo "== done: $(status | "$PYTHON" -c 'import json,sys; s=json.load(sys.stdin); print(s["counts"])')"
curl -sf -H "Authorization: Bearer $token" "$api/v1/batches/$id/results/metrics?format=csv" >"$work/metrics.csv"
echo "metrics: $(($(wc -l <"$work/metrics.csv") - 1)) rows in $work/metrics.csv"
