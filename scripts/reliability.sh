#!/usr/bin/env bash
# make reliability: the long versions of the reliability tests (see RELIABILITY.md).
#   1. the short suite (tests/reliability + the webhook auth/size/rate tests)
#   2. fault injection with more kills, for several seeds
#   3. the soak: 15 minutes at 70% of the measured maximum rate, 1,000 brands (memory is
#      judged after the 7-minute warm-up: RELIABILITY_SOAK_S below 720 fails that check)
#   4. pip-audit on the installed dependency set
# Results go to .run/reliability/; the exit code is non-zero if any step failed.
# Knobs: RELIABILITY_KILLS (15), RELIABILITY_SEEDS ("8 21"), RELIABILITY_SOAK_S (900),
#        RELIABILITY_SKIP_SOAK=1, RELIABILITY_FAULT_RATE (1.5 posts/s: a replay of ~3 min).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=.run/reliability
mkdir -p "$OUT"
failed=()

step() { echo; echo "=== $*"; }

step "short suite"
"$BIN/pytest" -q -p no:cacheprovider tests/reliability tests/connectors/test_webhook.py \
    2>&1 | tee "$OUT/short.txt" || failed+=("short suite")

for seed in ${RELIABILITY_SEEDS:-8 21}; do
    step "fault injection: seed $seed, ${RELIABILITY_KILLS:-15} worker kills"
    CRISISWATCH_FAULT_KILLS="${RELIABILITY_KILLS:-15}" CRISISWATCH_FAULT_SEED="$seed" \
    CRISISWATCH_FAULT_RATE="${RELIABILITY_FAULT_RATE:-1.5}" \
        "$BIN/pytest" -q -p no:cacheprovider --basetemp="$OUT/faults-$seed" \
        -o log_cli=true -o log_cli_level=WARNING tests/reliability/test_faults.py \
        2>&1 | tee "$OUT/faults-$seed.txt" || failed+=("faults seed $seed")
    cp "$OUT/faults-$seed/fault-timeline.txt" "$OUT/faults-$seed-timeline.txt" 2>/dev/null || true
done

if [[ "${RELIABILITY_SKIP_SOAK:-0}" != 1 ]]; then
    step "soak: ${RELIABILITY_SOAK_S:-900}s at 70% of the measured maximum rate, 1000 brands"
    rm -rf "$OUT/soak-work"
    "$BIN/python" -m bench.soak --duration-s "${RELIABILITY_SOAK_S:-900}" --brands 1000 \
        --workdir "$OUT/soak-work" --out "$OUT/soak.json" 2>"$OUT/soak.log" \
        || failed+=("soak")
    rm -rf "$OUT/soak-work"
fi

step "pip-audit (PyPI advisory database)"
"$BIN/python" -m pip_audit --version >/dev/null 2>&1 || "$BIN/pip" install -q pip-audit
"$BIN/python" -m pip freeze --exclude-editable >"$OUT/requirements-frozen.txt"
if "$BIN/python" -m pip_audit --progress-spinner off --strict -r "$OUT/requirements-frozen.txt" \
        2>&1 | tee "$OUT/pip-audit.txt"; then
    echo "pip-audit: no known vulnerabilities"
elif grep -q -E "could not be audited|ConnectionError|NameResolution|not found on PyPI" "$OUT/pip-audit.txt"; then
    echo "pip-audit: the advisory service is unreachable from here: NOT AUDITED (see $OUT/pip-audit.txt)"
    failed+=("pip-audit unreachable")
else
    failed+=("pip-audit found vulnerabilities")
fi

echo
if ((${#failed[@]})); then
    echo "reliability: FAILED: ${failed[*]}"
    exit 1
fi
echo "reliability: all passed (results in $OUT)"
