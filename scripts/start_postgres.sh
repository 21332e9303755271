#!/usr/bin/env bash
# Start (or reuse) a throwaway PostgreSQL on loopback and print its URL on stdout; logs go to stderr.
#   scripts/start_postgres.sh [PORT] [DIR]        defaults: 54329 /tmp/lora-advisor-pg
#   scripts/start_postgres.sh stop [DIR]
# Idempotent: installs the Debian package when missing, runs initdb once, starts the server unless it is
# already running. initdb refuses root, so as root the server runs as the `postgres` user.
set -euo pipefail

if [[ "${1:-}" == "stop" ]]; then
    ACTION=stop; DIR=${2:-/tmp/lora-advisor-pg}
else
    ACTION=start; PORT=${1:-54329}; DIR=${2:-/tmp/lora-advisor-pg}
fi

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
PGBIN=$(find_bin)
if [[ -z "$PGBIN" ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "PostgreSQL is not installed; run as root or: apt-get install -y postgresql" >&2; exit 1
    fi
    echo "installing postgresql ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
    PGBIN=$(find_bin)
fi

as_pg() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [[ "$ACTION" == "stop" ]]; then
    as_pg "$PGBIN/pg_ctl" -D "$DIR" -m fast -w stop >&2 || true
    exit 0
fi

mkdir -p "$DIR"
if [[ $(id -u) -eq 0 ]]; then chown postgres: "$DIR"; fi
chmod 700 "$DIR"
if [[ ! -f "$DIR/PG_VERSION" ]]; then
    # trust on loopback only: a test server that listens nowhere else.
    as_pg "$PGBIN/initdb" -D "$DIR" -U postgres --auth=trust >&2
fi
if as_pg "$PGBIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; then
    echo "PostgreSQL already running in $DIR" >&2
else
    as_pg "$PGBIN/pg_ctl" -D "$DIR" -l "$DIR/server.log" \
        -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DIR" -w start >&2
fi
echo "postgresql://postgres@127.0.0.1:$PORT/postgres"
