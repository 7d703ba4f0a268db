#!/usr/bin/env bash
# The performance suite (issue 6) with the arguments recorded in bench/RESULTS.md,
# "Performance suite". Each benchmark prints JSON lines; everything goes to
# $OUT (default bench/results/<UTC date-time>/), one file per benchmark, with
# /proc/loadavg before and after each. Sequential on purpose: 2 cores.
#
#   bench/run_all.sh                      # all
#   bench/run_all.sh fanout latency       # some (names below)
#   PGCAST_BENCH_PROFILE=/tmp/prof bench/run_all.sh fanout   # + py-spy of each gateway
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/venv/bin/python}
DSN=${PGCAST_TEST_DSN:-postgresql://postgres@127.0.0.1:5432/postgres}
OUT=${OUT:-bench/results/$(date -u +%Y-%m-%dT%H%M%SZ)}
mkdir -p "$OUT"

declare -A CMD=(
  [latency]="bench/latency.py --dsn $DSN --subscribers 100 --probes 10 --rate 1000 --seconds 5 --runs 3 --writers 1 --synchronous-commit off --target both"
  [fanout]="bench/fanout.py --dsn $DSN --clients 1000 --changes 1000 --writers 2 --runs 3 --target both"
  [ingest]="bench/ingest.py --dsn $DSN --statements 10 --rows 10000 --runs 3 --target both"
  [bulk_update]="bench/bulk_update.py --dsn $DSN --rows 100000 --runs 3"
  [capture]="bench/capture_overhead.py --dsn $DSN --bulk-runs 7 --single-runs 1000"
  [connections]="bench/connections.py --dsn $DSN --connections 10000 --runs 3 --steps 15000,19000 --hold 10 --target both"
  [resume]="bench/resume.py --dsn $DSN --changes 10000 --runs 3 --modes bulk,txns"
  [filtered]="bench/filtered_fanout.py --dsn $DSN --subscriptions 10,100,1000,10000 --connections 10 --changes 50000 --runs 3"
)
ORDER=(latency fanout ingest bulk_update capture connections resume filtered)
[ $# -gt 0 ] && ORDER=("$@")

for name in "${ORDER[@]}"; do
  file="$OUT/$name.jsonl"
  echo "== $name: $PY ${CMD[$name]}" >&2
  {
    echo "{\"command\": \"${CMD[$name]}\", \"loadavg_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"started\": \"$(date -u +%FT%TZ)\"}"
    # shellcheck disable=SC2086
    $PY ${CMD[$name]} 2>"$OUT/$name.stderr"
    echo "{\"loadavg_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"finished\": \"$(date -u +%FT%TZ)\"}"
  } | tee "$file"
done
echo "results in $OUT" >&2
