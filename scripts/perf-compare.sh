#!/usr/bin/env bash
# lockd's side of the peerbench comparison (docs/performance.md).
#
# Builds lockd and lockctl, starts `lockd dev --nodes 3` (default settings,
# fsync on every commit) in a fresh temp dir on 127.0.0.1, runs with
# `lockctl bench` the workloads ../shared/peerbench runs against etcd, in
# the same shapes (256-byte values, same clients and concurrency), REPS
# times each, prints one JSON result per line and a median table, records
# the nodes' RSS, and stops every process it started (by PID).
#
#   scripts/perf-compare.sh                 # all workloads (~5 min)
#   REPS=1 scripts/perf-compare.sh put get  # some of them
#   SESSIONS=10000,100000 scripts/perf-compare.sh keepalive
#
# Output: a results file under $OUT (default ./perf-results).
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
BASE=${BASE_PORT:-27300}
OUT=${OUT:-./perf-results}
SESSIONS=${SESSIONS:-10000,100000}
WORKLOADS=("$@")
[ ${#WORKLOADS[@]} -eq 0 ] && WORKLOADS=(put cput get lock contend session keepalive watch)

work=$(mktemp -d /tmp/lockd-perf.XXXXXX)
mkdir -p "$OUT"
res="$OUT/lockd-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
go build -o "$work/lockd" ./cmd/lockd
go build -o "$work/lockctl" ./cmd/lockctl

"$work/lockd" dev --nodes 3 --base-port "$BASE" --data-dir "$work/data" --log-level warn >"$work/dev.log" 2>&1 &
devpid=$!
cleanup() {
  kill -TERM "$devpid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$devpid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$devpid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export LOCKD_ENDPOINTS="127.0.0.1:$((BASE+1)),127.0.0.1:$((BASE+2)),127.0.0.1:$((BASE+3))"
ctl() { "$work/lockctl" "$@"; }
for _ in $(seq 100); do ctl status >/dev/null 2>&1 && break; sleep 0.2; done
ctl status

rss() { # the nodes' resident sizes in MiB, e.g. "13.5 13.2 13.9"
  local out=""
  for p in $(pgrep -P "$devpid"); do out="$out $(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$p/status")"; done
  echo "${out# }"
}
echo "rss_idle_mib: $(rss)" | tee -a "$res.txt"

run() { # name, then lockctl bench arguments
  local name=$1; shift
  for r in $(seq "$REPS"); do
    ctl -o json bench "$@" | sed "s/^{/{\"name\":\"$name\",\"rep\":$r,/" | tee -a "$res"
  done
}

for w in "${WORKLOADS[@]}"; do
  case $w in
    put)       run put --clients 1 --concurrency 1 --total 2000 --keys 2000 put ;;
    cput)      run cput --clients 8 --concurrency 64 --total 20000 --keys 20000 put ;;
    get)       run get --clients 8 --concurrency 64 --total 50000 --keys 1 get
               run get-stale --clients 8 --concurrency 64 --total 50000 --keys 1 --stale get ;;
    txn)       run txn --clients 8 --concurrency 64 --total 20000 txn ;;
    lock)      run lock --clients 1 --concurrency 1 --total 1000 lock ;;
    contend)   run lock-contended --clients 8 --concurrency 16 --total 2000 lock-contended ;;
    session)   run session --clients 8 --concurrency 16 --total 1000 session ;;
    keepalive)
      IFS=, read -ra levels <<<"$SESSIONS"
      for n in "${levels[@]}"; do
        # Like peerbench's scale test: 16 writers on 4 clients for 21 s
        # (longer than a keepalive period at TTL 60 s) with n live sessions.
        REPS=1 run "keepalive-$n" --clients 4 --concurrency 16 --duration 21s --sessions "$n" --ttl 60s keepalive &
        bpid=$!
        # RSS while the sessions are live: sample near the end of the window.
        while kill -0 $bpid 2>/dev/null; do sleep 1; last=$(rss); done
        wait $bpid
        echo "rss_at_${n}_sessions_mib: $last" | tee -a "$res.txt"
      done ;;
    watch)     run watch --clients 4 --concurrency 4 --duration 10s --watchers 16 --rate 1000 watch ;;
    *) echo "unknown workload $w" >&2; exit 2 ;;
  esac
done
echo "rss_end_mib: $(rss)" | tee -a "$res.txt"

# Median table of the main figures per name.
python3 - "$res" <<'PY' || true
import json, sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line); rows[r["name"]].append(r)
print(f"{'name':24} {'ops/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'extra'}")
for name, rs in rows.items():
    med = lambda f: statistics.median(f(r) for r in rs)
    extra = ""
    if rs[0].get("handover"): extra = f"handover p50 {med(lambda r: r['handover']['p50_ms']):.2f} p99 {med(lambda r: r['handover']['p99_ms']):.2f} ms"
    if rs[0].get("delivery"): extra = f"delivery p99 {med(lambda r: r['delivery']['p99_ms']):.2f} ms"
    print(f"{name:24} {med(lambda r: r['ops_per_s']):10.0f} {med(lambda r: r['latency']['p50_ms']):8.2f} {med(lambda r: r['latency']['p99_ms']):8.2f} {extra}")
PY
echo "results: $res"
