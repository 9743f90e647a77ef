#!/usr/bin/env bash
# Shows leakprobe finding the seed review's leaks in a running service.
#
# Starts, all on 127.0.0.1: the fake AI upstream (examples/upstream.py), and
# the leaky service and its fixed twin whole (examples/serve.sh: the FastAPI
# app under uvicorn with 2 workers, and a Celery worker with 2 prefork
# children, each replaced after DEMO_MAX_TASKS_PER_CHILD tasks), with their
# embedded defaults: SQLite and Celery's filesystem broker, in a temporary
# directory, no server. Each service runs under `leakprobe run`
# (docs/cli.md), and all its processes are served on one port, its scrape
# target (docs/multiprocess.md). Then examples/drive.py sends the same
# bounded load to both (DEMO_ROUNDS rounds of DEMO_REQUESTS requests and
# DEMO_TASKS documents, one Celery task each, over at least 5 s), scrapes
# leakprobe after every round and prints the figures and the sites it names.
# Last, each `leakprobe run` is stopped (SIGINT, as Ctrl-C would): it stops
# its service and prints leakprobe's own verdicts (the leaking lines, the
# leaking task), and writes JSON and HTML reports to build/demo-report/.
# Every process started here is stopped on exit, whatever the exit.
#
# Usage: scripts/demo.sh   (DEMO_ROUNDS=8 DEMO_REQUESTS=75 DEMO_TASKS=5
#                           DEMO_MAX_TASKS_PER_CHILD=20 by default: a task a
#                           second, so that a child lives 20 s or more, long
#                           enough for a verdict, and one is replaced)
set -euo pipefail

# shellcheck source=scripts/setup.sh
source "$(dirname "$0")/setup.sh"   # sets REPO_ROOT, VENV_PY
cd "$REPO_ROOT"

DEMO_STARTED=$SECONDS  # after the set-up (a build of leakprobe, minutes)
ROUNDS="${DEMO_ROUNDS:-8}"
REQUESTS="${DEMO_REQUESTS:-75}"  # 600 in all: the review's 600 leaked clients
TASKS="${DEMO_TASKS:-5}"
MAX_TASKS_PER_CHILD="${DEMO_MAX_TASKS_PER_CHILD:-20}"
LOG_DIR="$(mktemp -d -t leakprobe-demo.XXXXXX)"
REPORT_DIR="$REPO_ROOT/build/demo-report"
mkdir -p "$REPORT_DIR"
PIDS=()
RUNS=()  # the `leakprobe run` processes, one per service

cleanup() {
  local status=$?
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Up to 20 s for a clean shutdown (a `leakprobe run` gives its service 15 s
  # after SIGTERM, then SIGKILLs its process group), then SIGKILL whatever is
  # left.
  for _ in $(seq 200); do
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

# start_service NAME APP_DIR PORT METRICS_PORT: runs the service whole
# (examples/serve.sh: uvicorn with 2 workers, a Celery worker with 2 prefork
# children) under `leakprobe run` (a trend sample every 0.5 s, 3 s of
# warm-up: a Celery child lives 20 s or more; 15 s to stop after SIGTERM,
# uvicorn and Celery both stopping gracefully), every process served on
# METRICS_PORT. Its data (the SQLite file, the broker's folder) in
# $LOG_DIR/NAME. `leakprobe run` writes its progress and verdicts on stderr,
# kept in $LOG_DIR/NAME.summary; the service's own log goes to
# $LOG_DIR/NAME.log, through the `sh -c 'exec ...'`.
start_service() {
  UPSTREAM_URL="http://127.0.0.1:$UPSTREAM_PORT" EXAMPLE_DATA_DIR="$LOG_DIR/$1" \
  PYTHON="$VENV_PY" MAX_TASKS_PER_CHILD="$MAX_TASKS_PER_CHILD" SUMMARY_CACHE_SIZE=16 \
  LEAKPROBE_HOST=127.0.0.1 LEAKPROBE_PORT="$4" LEAKPROBE_LOG_LEVEL=warning \
  LEAKPROBE_CONTAINER_DISCOVER_INTERVAL=2 LEAKPROBE_NATIVE=1 \
    "$VENV_PY" -m leakprobe run --interval 0.5 --warmup 3 --grace 15 \
      --json "$REPORT_DIR/$1.json" --html "$REPORT_DIR/$1.html" -- \
      sh -c 'exec examples/serve.sh "$0" "$1" >>"$2" 2>&1' "$2" "$3" "$LOG_DIR/$1.log" \
      2>"$LOG_DIR/$1.summary" &
  PIDS+=($!)
  RUNS+=($!)
}
start_service leaky examples/leaky_service "$LEAKY_PORT" "$LEAKY_METRICS_PORT"
start_service fixed examples/fixed_service "$FIXED_PORT" "$FIXED_METRICS_PORT"

echo "upstream on :$UPSTREAM_PORT; leaky service on :$LEAKY_PORT" \
     "(leakprobe :$LEAKY_METRICS_PORT); fixed twin on :$FIXED_PORT" \
     "(leakprobe :$FIXED_METRICS_PORT); all on 127.0.0.1"
# drive.py waits for every endpoint to answer (and each service's 7
# processes: uvicorn's supervisor, its 2 workers and multiprocessing's
# resource tracker, Celery's main process and its 2 children), then bounds
# its own run time; the outer timeout is a last resort.
timeout 150 "$VENV_PY" examples/drive.py \
  --target leaky "http://127.0.0.1:$LEAKY_PORT" "http://127.0.0.1:$LEAKY_METRICS_PORT/metrics" \
  --target fixed "http://127.0.0.1:$FIXED_PORT" "http://127.0.0.1:$FIXED_METRICS_PORT/metrics" \
  --rounds "$ROUNDS" --requests "$REQUESTS" --tasks "$TASKS" --round-seconds 5 \
  --processes 7 --wait 60 --deadline 90

# leakprobe's verdicts: stop each `leakprobe run` as Ctrl-C would; it stops
# its service (SIGTERM), evaluates the last samples and writes the reports.
kill -INT "${RUNS[@]}"
for pid in "${RUNS[@]}"; do wait "$pid" || true; done
# What each process still held at its end, as leakprobe's Celery and ASGI
# integrations report it (a Celery child at worker_process_shutdown, recycled
# ones included; a web worker at lifespan shutdown): one line per report,
# counted over the processes.
for name in leaky fixed; do
  echo
  echo "== What the $name service's processes still held at their end" \
       "(leakprobe's shutdown reports) =="
  grep -h -E 'shutdown \(pid [0-9]+\): ' "$LOG_DIR/$name.log" \
    | sed -E 's/^\[leakprobe\] \[warning\] //; s/ \(pid [0-9]+\)//' | sort | uniq -c \
    | sed -E 's/^ *([0-9]+) /\1 processes: /' \
    || echo "nothing: every engine disposed, every client closed"
done
for name in leaky fixed; do
  echo
  echo "== leakprobe's verdicts for the $name service =="
  cat "$LOG_DIR/$name.summary"
done
echo
echo "Reports: $REPORT_DIR/leaky.html and $REPORT_DIR/fixed.html" \
     "(open in a browser; JSON beside them)"
echo "The demo ran $((SECONDS - DEMO_STARTED)) s after the set-up."
