#!/usr/bin/env bash
# Shows leakprobe finding the seed review's critical leak in a running service.
#
# Starts, all on 127.0.0.1: the fake AI upstream (examples/upstream.py), the
# leaky FastAPI service and its fixed twin under uvicorn, each run by
# `leakprobe run` (docs/cli.md) and serving /metrics on its own port. Then
# examples/drive.py sends the same bounded load to both (DEMO_ROUNDS x
# DEMO_REQUESTS requests each), scrapes leakprobe after every round and prints
# the figures and the sites it names. Last, each `leakprobe run` is stopped
# (SIGINT, as Ctrl-C would): it stops its service and prints leakprobe's own
# verdicts, and writes JSON and HTML reports to build/demo-report/.
# Every process started here is stopped on exit, whatever the exit.
#
# Usage: scripts/demo.sh            (DEMO_ROUNDS=6 DEMO_REQUESTS=100 by default)
set -euo pipefail

# shellcheck source=scripts/setup.sh
source "$(dirname "$0")/setup.sh"   # sets REPO_ROOT, VENV_PY
cd "$REPO_ROOT"

ROUNDS="${DEMO_ROUNDS:-6}"
REQUESTS="${DEMO_REQUESTS:-100}"
LOG_DIR="$(mktemp -d -t leakprobe-demo.XXXXXX)"
REPORT_DIR="$REPO_ROOT/build/demo-report"
mkdir -p "$REPORT_DIR"
PIDS=()
RUNS=()  # the `leakprobe run` processes, one per service

cleanup() {
  local status=$?
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Up to 10 s for a clean shutdown (a `leakprobe run` gives its service 5 s
  # after SIGTERM), then SIGKILL whatever is left.
  for _ in $(seq 100); do
    kill -0 "${PIDS[@]}" 2>/dev/null || break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ]; then
    echo "demo failed (exit $status); last lines of each log:" >&2
    tail -n 20 "$LOG_DIR"/*.log >&2 || true
  fi
  rm -rf "$LOG_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Five distinct ports that are free right now on 127.0.0.1 (the kernel picks
# them, all held at once so that none comes twice).
read -r UPSTREAM_PORT LEAKY_PORT LEAKY_METRICS_PORT FIXED_PORT FIXED_METRICS_PORT < <(
  "$VENV_PY" - <<'PY'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)

"$VENV_PY" examples/upstream.py --port "$UPSTREAM_PORT" >"$LOG_DIR/upstream.log" 2>&1 &
PIDS+=($!)

# start_service NAME APP_DIR PORT METRICS_PORT: runs the app under uvicorn,
# under `leakprobe run` (a trend sample every second, 5 s of warm-up).
# `leakprobe run` writes its progress and verdicts on stderr, kept in
# $LOG_DIR/NAME.summary; the service's own log (uvicorn writes on stderr
# too) goes to $LOG_DIR/NAME.log, through the `sh -c 'exec ...'`.
start_service() {
  UPSTREAM_URL="http://127.0.0.1:$UPSTREAM_PORT" \
  LEAKPROBE_HOST=127.0.0.1 LEAKPROBE_PORT="$4" LEAKPROBE_LOG_LEVEL=info \
  LEAKPROBE_CONTAINER_DISCOVER_INTERVAL=2 LEAKPROBE_NATIVE=1 \
    "$VENV_PY" -m leakprobe run --interval 1 --warmup 5 \
      --json "$REPORT_DIR/$1.json" --html "$REPORT_DIR/$1.html" -- \
      sh -c 'exec "$0" -m uvicorn app:app --app-dir "$1" --host 127.0.0.1 \
               --port "$2" --no-access-log >>"$3" 2>&1' \
        "$VENV_PY" "$2" "$3" "$LOG_DIR/$1.log" \
      2>"$LOG_DIR/$1.summary" &
  PIDS+=($!)
  RUNS+=($!)
}
start_service leaky examples/leaky_service "$LEAKY_PORT" "$LEAKY_METRICS_PORT"
start_service fixed examples/fixed_service "$FIXED_PORT" "$FIXED_METRICS_PORT"

echo "upstream on :$UPSTREAM_PORT; leaky service on :$LEAKY_PORT" \
     "(leakprobe :$LEAKY_METRICS_PORT); fixed twin on :$FIXED_PORT" \
     "(leakprobe :$FIXED_METRICS_PORT); all on 127.0.0.1"
# drive.py waits for every endpoint to answer, then bounds its own run time;
# the outer timeout is a last resort.
timeout 110 "$VENV_PY" examples/drive.py \
  --target leaky "http://127.0.0.1:$LEAKY_PORT" "http://127.0.0.1:$LEAKY_METRICS_PORT/metrics" \
  --target fixed "http://127.0.0.1:$FIXED_PORT" "http://127.0.0.1:$FIXED_METRICS_PORT/metrics" \
  --rounds "$ROUNDS" --requests "$REQUESTS" --wait 30 --deadline 75

# leakprobe's verdicts: stop each `leakprobe run` as Ctrl-C would; it stops
# its service (SIGTERM), evaluates the last samples and writes the reports.
kill -INT "${RUNS[@]}"
for pid in "${RUNS[@]}"; do wait "$pid" || true; done
for name in leaky fixed; do
  echo
  echo "== leakprobe's verdicts for the $name service =="
  cat "$LOG_DIR/$name.summary"
done
echo
echo "Reports: $REPORT_DIR/leaky.html and $REPORT_DIR/fixed.html" \
     "(open in a browser; JSON beside them)"
