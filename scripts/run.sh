#!/usr/bin/env bash
# `make run`: install, migrate, seed the demo, then run web, worker and beat until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

scripts/ensure-venv.sh
mkdir -p var
if [ -f .env ]; then set -a; . ./.env; set +a; fi
export DOCKYARD_HOST=${HOST:-127.0.0.1} DOCKYARD_PORT=${PORT:-8000}
export DOCKYARD_LOG_FORMAT=${DOCKYARD_LOG_FORMAT:-console}  # readable in a terminal; production logs JSON

if [ -z "${DATABASE_URL:-}" ]; then
  say "No DATABASE_URL: using the embedded default (SQLite in var/, filesystem broker)"
else
  scripts/ensure-services.sh
fi
if [ "${DOCKYARD_RUNTIME:-docker}" = docker ]; then
  if scripts/ensure-docker.sh; then
    scripts/build-base-image.sh || say "No base image: catalog builds will fail until scripts/build-base-image.sh succeeds."
  else
    say "Carrying on without a Docker engine: workloads cannot start until one answers."
  fi
fi

# Prometheus counters start afresh with the processes (files of earlier runs would be added in).
metrics_dir=${PROMETHEUS_MULTIPROC_DIR:-var/metrics}
rm -rf "$metrics_dir" && mkdir -p "$metrics_dir"
export PROMETHEUS_MULTIPROC_DIR=$metrics_dir

.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py collectstatic --noinput -v0
.venv/bin/python manage.py seed_demo

cat <<MSG

  Dockyard is starting at http://$DOCKYARD_HOST:$DOCKYARD_PORT/
  Demo logins (demo only): admin (platform admin), alice (demo team admin), bob (demo member),
  carol (research team admin); password for all: dockyard-demo
  Ctrl-C stops web, worker and beat.

MSG
exec .venv/bin/honcho start -f Procfile
