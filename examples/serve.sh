#!/usr/bin/env bash
# Runs one example service whole: its web app and its Celery worker, with
# the embedded defaults (examples/service_common.py: SQLite and Celery's
# filesystem broker in $EXAMPLE_DATA_DIR) unless DATABASE_URL and
# CELERY_BROKER_URL say otherwise.
#
# Usage: examples/serve.sh SERVICE_DIR HTTP_PORT
#   SERVICE_DIR   examples/leaky_service or examples/fixed_service
#   HTTP_PORT     the web app's port on 127.0.0.1
# Environment (defaults): WEB_WORKERS (2), CELERY_CONCURRENCY (2),
#   MAX_TASKS_PER_CHILD (20: each Celery child is replaced after that many
#   tasks), PYTHON (python3); UPSTREAM_URL, EXAMPLE_DATA_DIR, DATABASE_URL,
#   CELERY_BROKER_URL as in service_common.py; LEAKPROBE_PORT (9464): the
#   one scrape target of every process here (docs/multiprocess.md).
#
# Under `leakprobe run -- examples/serve.sh ...` every process is profiled
# (the uvicorn supervisor too); on its own, the workers are, through the
# app's `import leakprobe`. Stops both servers when it gets SIGTERM or
# SIGINT, or when either of them exits.
set -euo pipefail

if [ $# -ne 2 ] || [ ! -f "$1/app.py" ] || ! [[ "$2" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 SERVICE_DIR HTTP_PORT (SERVICE_DIR holds app.py, e.g." \
       "examples/leaky_service; HTTP_PORT a number)" >&2
  exit 2
fi
SERVICE_DIR="$(cd "$1" && pwd)"
HTTP_PORT="$2"
PYTHON="${PYTHON:-python3}"

# The table exists before the processes start (they would race to make it).
LEAKPROBE_DISABLE=1 "$PYTHON" -c \
  'import sys; sys.path.insert(0, sys.argv[1]); import service_common; service_common.init_db()' \
  "$SERVICE_DIR/.."

"$PYTHON" -m uvicorn app:app --app-dir "$SERVICE_DIR" --host 127.0.0.1 --port "$HTTP_PORT" \
  --workers "${WEB_WORKERS:-2}" --no-access-log &
WEB=$!
"$PYTHON" -m celery --workdir "$SERVICE_DIR" -A app:celery worker --pool prefork \
  --concurrency "${CELERY_CONCURRENCY:-2}" --max-tasks-per-child "${MAX_TASKS_PER_CHILD:-20}" \
  --loglevel warning --without-gossip --without-mingle --without-heartbeat &
WORKER=$!

stop() { kill -TERM "$WEB" "$WORKER" 2>/dev/null || true; }
trap 'stop; wait; exit 0' TERM INT
# Either server exiting ends the service (the other is stopped).
status=0
wait -n "$WEB" "$WORKER" || status=$?
stop
wait || true
exit "$status"
