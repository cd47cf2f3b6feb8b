# scripts/lib/pg.sh — sourced by scripts/test.sh and scripts/bench.sh.
#
# pg_start: installs the PostgreSQL server binaries (Debian package
# `postgresql`) when no /usr/lib/postgresql/*/bin/initdb exists, starts a
# throwaway server (temp data dir, free loopback port, durability off, as the
# `postgres` user when run as root) and sets PG_URL to its admin URL. It
# registers pg_stop on EXIT; call it after `set -euo pipefail`.


pg_start() {
    if [ "$(id -u)" -eq 0 ]; then PG_AS_ROOT=1; PG_SUDO=(); else PG_AS_ROOT=0; PG_SUDO=(sudo); fi
    if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
        echo "PostgreSQL server binaries not found; installing package 'postgresql'" >&2
        "${PG_SUDO[@]}" apt-get update
        "${PG_SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
    fi
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PG_DIR=$(mktemp -d)
    chmod 755 "$PG_DIR"
    mkdir "$PG_DIR/pg"
    [ "$PG_AS_ROOT" -eq 1 ] && chown postgres: "$PG_DIR/pg"
    PG_STARTED=0
    trap pg_stop EXIT
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
        || echo $((20000 + RANDOM % 40000)))
    if ! pg_as "$PGBIN/initdb" -D "$PG_DIR/pg/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
            >"$PG_DIR/initdb.log" 2>&1; then
        echo "initdb failed:" >&2; cat "$PG_DIR/initdb.log" >&2; exit 1
    fi
    PG_STARTED=1
    if ! pg_as "$PGBIN/pg_ctl" -D "$PG_DIR/pg/data" \
            -o "-p $port -k $PG_DIR/pg -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=256MB" \
            -l "$PG_DIR/pg/log" -w start >/dev/null; then
        echo "PostgreSQL failed to start; server log:" >&2; cat "$PG_DIR/pg/log" >&2 || true; exit 1
    fi
    PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

pg_as() {
    if [ "$PG_AS_ROOT" -eq 1 ]; then
        (cd "$PG_DIR" && runuser -u postgres -- "$@")
    else
        (cd "$PG_DIR" && "$@")
    fi
}

pg_stop() {
    local status=$?
    if [ "${PG_STARTED:-0}" -eq 1 ]; then
        pg_as "$PGBIN/pg_ctl" -D "$PG_DIR/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_DIR"
    exit "$status"
}
