#!/usr/bin/env bash
# make demo: a real Kafka broker, the real worker, a bundled sample replayed through
# them, and the alerts read back from the alert topic. Everything is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
RUN=.run/demo
SAMPLE=${SAMPLE:-samples/demo-posts.jsonl.gz}
mkdir -p "$RUN"
free_port() { "$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

KAFKA_PORT=$(free_port)
WEB_PORT=$(free_port)
WORKER_PID=""
cleanup() {
  [ -n "$WORKER_PID" ] && kill "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null || true
  "$BIN/crisiswatch" kafka down --dir "$RUN/kafka" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "==> starting a local Kafka broker (KRaft, single node)"
rm -rf "$RUN/kafka"
BOOTSTRAP=$("$BIN/crisiswatch" kafka up --dir "$RUN/kafka" --port "$KAFKA_PORT" | tail -n 1)
echo "    bootstrap: $BOOTSTRAP"

export CRISISWATCH_KAFKA_BOOTSTRAP="$BOOTSTRAP"
export CRISISWATCH_TOPIC_PREFIX="crisiswatch"
export CRISISWATCH_RULES_DIR=brands
export CRISISWATCH_DATA_DIR="$RUN/worker"
export CRISISWATCH_WEB_PORT="$WEB_PORT"
export CRISISWATCH_WEB_HOST=127.0.0.1
rm -rf "$RUN/worker"

echo "==> checking the rules in brands/"
"$BIN/crisiswatch" rules check brands

echo "==> starting the worker (log: $RUN/worker.log)"
"$BIN/crisiswatch" worker >"$RUN/worker.log" 2>&1 &
WORKER_PID=$!
for _ in $(seq 1 120); do
  if curl -fs "http://127.0.0.1:$WEB_PORT/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$WORKER_PID" 2>/dev/null; then echo "the worker exited; see $RUN/worker.log"; tail -5 "$RUN/worker.log"; exit 1; fi
  sleep 0.5
done
curl -fs "http://127.0.0.1:$WEB_PORT/readyz" >/dev/null || { echo "the worker did not become ready; see $RUN/worker.log"; exit 1; }

echo "==> replaying $SAMPLE into crisiswatch.posts"
"$BIN/crisiswatch" connect replay "$SAMPLE" --metrics-port 0 | tee "$RUN/replay.txt"
produced=$(tail -n 1 "$RUN/replay.txt" | awk '{print $2}')

echo "==> waiting for the worker to process all $produced posts"
processed() {
  curl -fs "http://127.0.0.1:$WEB_PORT/metrics" | awk '
    /^crisiswatch_posts_consumed_total/ || /^crisiswatch_dead_letters_total/ {n += $NF}
    END {printf "%d", n}'
}
for _ in $(seq 1 600); do
  [ "$(processed)" -ge "$produced" ] && break
  kill -0 "$WORKER_PID" 2>/dev/null || { echo "the worker exited; see $RUN/worker.log"; exit 1; }
  sleep 0.5
done
echo "    processed $(processed) of $produced"

echo "==> alerts read back from the crisiswatch.alerts topic"
"$BIN/crisiswatch" alerts tail --from-beginning --idle-exit 10 | tee "$RUN/alerts.txt"
n=$(grep -c "incident=" "$RUN/alerts.txt" || true)
b=$("$BIN/crisiswatch" backtest --rules brands "$SAMPLE" 2>/dev/null | wc -l)
echo
echo "==> $n alert events came back from the real alert topic; backtest on the same file gives $b."
[ "$n" -gt 0 ] || { echo "no alert came back; see $RUN/worker.log"; exit 1; }
cat <<TXT
Where to look:
  metrics:   http://127.0.0.1:$WEB_PORT/metrics   (health: /healthz, readiness: /readyz)
  alerts:    topic crisiswatch.alerts on $BOOTSTRAP (CloudEvents JSON, keyed by brand)
  tail:      CRISISWATCH_KAFKA_BOOTSTRAP=$BOOTSTRAP .venv/bin/crisiswatch alerts tail --from-beginning --idle-exit 5
  offline:   .venv/bin/crisiswatch backtest --rules brands $SAMPLE
TXT
if [ "${DEMO_KEEP:-0}" = "1" ]; then
  echo "The broker and the worker keep running (DEMO_KEEP=1); press Ctrl-C to stop them."
  wait "$WORKER_PID" || true
else
  echo "(everything is stopped now; run 'DEMO_KEEP=1 make demo' to keep the broker and worker up and try these)"
fi
