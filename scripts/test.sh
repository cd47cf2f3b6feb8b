#!/usr/bin/env bash
# scripts/test.sh — the project's one test command (CI and developers alike).
#
# What it does:
#   1. Installs the PostgreSQL server binaries (Debian package `postgresql`) if
#      no /usr/lib/postgresql/*/bin/initdb exists. The package's own cluster is
#      never used; if it starts a service on 5432 that is harmless. Installs
#      Debian's `chromium` (+ `chromium-driver`) if missing, for the dashboard
#      browser test (tests/dashboard_browser.rs, headless).
#   2. Starts a throwaway PostgreSQL server in a fresh temp dir, on a free
#      loopback port, with durability turned off (fast, disposable).
#   3. Exports HUBSYNC_TEST_PG_URL=postgres://postgres@127.0.0.1:$PORT/postgres
#      and runs `cargo test --all-targets "$@"` from the repo root (extra
#      arguments are passed through, e.g. `scripts/test.sh -- --nocapture`).
#   4. On exit (success, failure or interrupt) stops the server and removes the
#      temp dir. Exits with cargo's status.
#   MariaDB (MySQL tests): installs Debian package `mariadb-server` if no
#   `mariadbd` exists, starts a throwaway server the same way (datadir in the
#   temp dir, free loopback port, no systemd, utf8mb4), creates login hub/hub
#   and exports HUBSYNC_TEST_MYSQL_URL=mysql://hub:hub@127.0.0.1:$MYPORT/mysql;
#   stopped on exit with the PostgreSQL server.
#
# Works as root (CI: the server runs as the `postgres` user via runuser) or as
# a normal user (the server runs as that user; apt-get goes through sudo).
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
    IS_ROOT=1
    SUDO=()
else
    IS_ROOT=0
    SUDO=(sudo)
fi

# --- 1. PostgreSQL server binaries ------------------------------------------
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    echo "test.sh: PostgreSQL server binaries not found; installing package 'postgresql'" >&2
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
fi

# --- 1b. Chromium (headless) for the dashboard browser test -----------------
if ! command -v chromium >/dev/null 2>&1; then
    echo "test.sh: chromium not found; installing packages 'chromium' and 'chromium-driver'" >&2
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver
fi

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
if [ ! -x "$PGBIN/initdb" ] || [ ! -x "$PGBIN/pg_ctl" ]; then
    echo "test.sh: no initdb/pg_ctl in $PGBIN" >&2
    exit 1
fi

# Run a PostgreSQL server binary as the right user. initdb/postgres refuse to
# run as root, so as root we switch to the `postgres` user (created by the
# Debian package). cd to the temp dir first so the postgres user never needs
# access to our working directory.
as_pg() {
    if [ "$IS_ROOT" -eq 1 ]; then
        (cd "$d" && runuser -u postgres -- "$@")
    else
        (cd "$d" && "$@")
    fi
}

# --- 2. throwaway server ----------------------------------------------------
d=$(mktemp -d)
chmod 755 "$d"
mkdir "$d/pg"
if [ "$IS_ROOT" -eq 1 ]; then
    chown postgres: "$d/pg"
fi
PGDATA_DIR="$d/pg/data"
PGLOG="$d/pg/log"
started=0

cleanup() {
    local status=$?
    if [ "$started" -eq 1 ]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    stop_mariadb 2>/dev/null || true
    rm -rf "$d"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if command -v python3 >/dev/null 2>&1; then
    PORT=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')
else
    PORT=$((20000 + RANDOM % 40000))
fi

if ! as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
        >"$d/initdb.log" 2>&1; then
    echo "test.sh: initdb failed:" >&2
    cat "$d/initdb.log" >&2
    exit 1
fi

started=1
if ! as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" \
        -o "-p $PORT -k $d/pg -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        -l "$PGLOG" -w start >/dev/null; then
    echo "test.sh: PostgreSQL failed to start; server log:" >&2
    cat "$PGLOG" >&2 || true
    exit 1
fi

export HUBSYNC_TEST_PG_URL="postgres://postgres@127.0.0.1:$PORT/postgres"
echo "test.sh: PostgreSQL $(basename "$(dirname "$PGBIN")") running at $HUBSYNC_TEST_PG_URL" >&2

# --- MariaDB (MySQL/MariaDB sites and masters) -----------------------------
MY_PID_FILE="$d/my/mariadbd.pid"
stop_mariadb() {
    if [ -f "$MY_PID_FILE" ]; then
        local pid
        pid=$(cat "$MY_PID_FILE")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
}
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)
if [ ! -x "$MARIADBD" ] || ! command -v mariadb-install-db >/dev/null 2>&1; then
    echo "test.sh: MariaDB server not found; installing package 'mariadb-server'" >&2
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y mariadb-server
    MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)
fi
MY_USER=()
if [ "$IS_ROOT" -eq 1 ]; then
    MY_USER=(--user=root)
fi
mkdir -p "$d/my"
if ! mariadb-install-db "${MY_USER[@]}" --datadir="$d/my/data" --auth-root-authentication-method=normal \
        --skip-test-db >"$d/my/install.log" 2>&1; then
    echo "test.sh: mariadb-install-db failed:" >&2
    cat "$d/my/install.log" >&2
    exit 1
fi
MYPORT=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()' 2>/dev/null || echo $((20000 + RANDOM % 40000)))
# --no-defaults: ignore /etc/mysql (Debian's service config); its compiled-in
# character set is latin1, hence the utf8mb4 options.
"$MARIADBD" --no-defaults "${MY_USER[@]}" --datadir="$d/my/data" --socket="$d/my/mariadbd.sock" \
    --port="$MYPORT" --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$MY_PID_FILE" \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci --max-connections=500 \
    --innodb-flush-log-at-trx-commit=0 --log-error="$d/my/error.log" >/dev/null 2>&1 &
for _ in $(seq 1 100); do
    if mariadb-admin --no-defaults -uroot -S "$d/my/mariadbd.sock" ping >/dev/null 2>&1; then
        break
    fi
    sleep 0.2
done
if ! mariadb --no-defaults --default-character-set=utf8mb4 -uroot -S "$d/my/mariadbd.sock" \
        -e "CREATE USER 'hub'@'127.0.0.1' IDENTIFIED BY 'hub'; GRANT ALL ON *.* TO 'hub'@'127.0.0.1' WITH GRANT OPTION"; then
    echo "test.sh: MariaDB failed to start; server log:" >&2
    cat "$d/my/error.log" >&2 || true
    exit 1
fi
export HUBSYNC_TEST_MYSQL_URL="mysql://hub:hub@127.0.0.1:$MYPORT/mysql"
echo "test.sh: MariaDB $("$MARIADBD" --version | awk '{print $3}') running at mysql://hub:***@127.0.0.1:$MYPORT/mysql" >&2

# --- 3. tests ---------------------------------------------------------------
set +e
cargo test --all-targets "$@"
status=$?
set -e
exit "$status"
