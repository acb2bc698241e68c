#!/bin/sh
# Installs what `make bench` needs when it is missing: Debian's restic, borgbackup, zstd, GNU time and
# PostgreSQL (server + client tools) through apt-get, and the Python packages (the worker, moto's
# server, boto3, psycopg) through pip from requirements-dev.txt.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

missing=""
command -v restic >/dev/null 2>&1 || missing="$missing restic"
command -v borg >/dev/null 2>&1 || missing="$missing borgbackup"
command -v zstd >/dev/null 2>&1 || missing="$missing zstd"
[ -x /usr/bin/time ] || missing="$missing time"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
command -v pg_dump >/dev/null 2>&1 || missing="$missing postgresql-client"
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "bench: installing$missing" >&2
    $SUDO apt-get update
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
fi

if ! command -v rdsbackup >/dev/null 2>&1 || ! command -v moto_server >/dev/null 2>&1 \
        || ! "$PYTHON" -c "import boto3, psycopg, moto.server, flask" >/dev/null 2>&1; then
    echo "bench: installing Python packages from requirements-dev.txt" >&2
    "$PYTHON" -m pip install -r requirements-dev.txt
fi
