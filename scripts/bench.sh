#!/usr/bin/env bash
# make bench: run every benchmark in bench/, each printing its table.
# Full runs record their results in BENCHMARKS.md (one section per benchmark);
# BENCH_ARGS (e.g. --quick) is passed to every benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
read -r -a extra <<< "${BENCH_ARGS:-}"
status=0
for bench in bench/bench_*.py; do
    echo "== ${bench} ${extra[*]:-}"
    started=$(date +%s)
    if ! "$PY" "$bench" "${extra[@]}"; then
        echo "!! ${bench} failed" >&2
        status=1
    fi
    echo "== ${bench}: $(( $(date +%s) - started )) s"
    echo
done
echo "Results: the tables above; recorded runs are in BENCHMARKS.md (bench_worker.py writes"
echo "its section '## Worker through Kafka (issue 5)' itself unless --quick or --no-record)."
exit "$status"
