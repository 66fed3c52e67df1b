#!/bin/sh
# Start the reference Flask manager under gunicorn (sync workers).
#
#   bench/reference-flask/run.sh PORT DBPATH [WORKERS]
#
# Environment:
#   KATTILA_PSK           fleet key (default: bench-key, the load generator's)
#   KATTILA_SYNCHRONOUS   NORMAL or FULL (default: unset = SQLite's default,
#                         which is FULL in WAL mode for this Python's SQLite)
#   KATTILA_BUSY_TIMEOUT  seconds to wait for the database write lock (30)
#   VENV                  virtualenv location (default: .venv next to this file)
set -eu
if [ $# -lt 2 ]; then
    echo "usage: $0 PORT DBPATH [WORKERS]" >&2
    exit 2
fi
PORT=$1
DBPATH=$2
WORKERS=${3:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${VENV:-$HERE/.venv}

if [ ! -x "$VENV/bin/gunicorn" ] || ! cmp -s "$HERE/requirements.txt" "$VENV/.requirements.txt"; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet -r "$HERE/requirements.txt"
    cp "$HERE/requirements.txt" "$VENV/.requirements.txt"
fi

export KATTILA_DB="$DBPATH"
export KATTILA_PSK="${KATTILA_PSK:-bench-key}"
export KATTILA_BUSY_TIMEOUT="${KATTILA_BUSY_TIMEOUT:-30}"

# Create the schema once before the workers start, so they don't race on it.
cd "$HERE"
"$VENV/bin/python" -c 'import db; db.init_db(); print("database", db.db_path(), "synchronous =", ["OFF", "NORMAL", "FULL", "EXTRA"][db.synchronous()])'

# Sync workers: one request at a time per process, one SQLite connection per
# process; writes from different workers serialise on the database lock.
# --timeout exceeds the busy timeout so a waiting worker isn't killed.
exec "$VENV/bin/gunicorn" \
    --workers "$WORKERS" \
    --worker-class sync \
    --bind "127.0.0.1:$PORT" \
    --timeout 120 \
    --log-level warning \
    app:app
