#!/usr/bin/env bash
# Makes sure the PostgreSQL and Redis named by DATABASE_URL and REDIS_URL answer. A local
# server that is down is started; on Debian as root, one that is missing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

pg_up() { pg_isready -q -h "$1" -p "$2"; }
redis_up() { [ "$(redis-cli -h "$1" -p "$2" ping 2>/dev/null)" = PONG ]; }

ensure_postgres() {
  local host port
  host=$(url_part "$DATABASE_URL" host 5432); port=$(url_part "$DATABASE_URL" port 5432)
  command -v pg_isready >/dev/null || apt_install "PostgreSQL client tools are missing" postgresql-client
  pg_up "$host" "$port" && return 0
  is_local "$host" || die "PostgreSQL at $host:$port does not answer; start it or set DATABASE_URL."
  local installed_now=0
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    apt_install "PostgreSQL is not installed" postgresql
    installed_now=1
  fi
  local version; version=$(ls /etc/postgresql | sort -V | tail -n1)
  if [ "$installed_now" = 1 ]; then
    # A server installed just for the test suite: let the local `postgres` role in over
    # loopback without a password, as DATABASE_URL's default expects.
    sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  say "Starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main start \
    || die "PostgreSQL did not start: pg_ctlcluster $version main start"
  wait_until 30 PostgreSQL pg_up "$host" "$port" || die "PostgreSQL at $host:$port did not come up within 30 s."
}

ensure_redis() {
  local host port
  host=$(url_part "$REDIS_URL" host 6379); port=$(url_part "$REDIS_URL" port 6379)
  command -v redis-cli >/dev/null || apt_install "Redis tools are missing" redis-tools
  redis_up "$host" "$port" && return 0
  is_local "$host" || die "Redis at $host:$port does not answer; start it or set REDIS_URL."
  command -v redis-server >/dev/null || apt_install "Redis is not installed" redis-server
  say "Starting Redis on port $port"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --maxmemory-policy noeviction --dir /tmp --logfile /tmp/dockyard-redis.log \
    || die "Redis did not start: see /tmp/dockyard-redis.log"
  wait_until 15 Redis redis_up "$host" "$port" || die "Redis at $host:$port did not come up within 15 s."
}

[ -n "${DATABASE_URL:-}" ] && case "$DATABASE_URL" in postgres*) ensure_postgres ;; esac
[ -n "${REDIS_URL:-}" ] && ensure_redis
exit 0
