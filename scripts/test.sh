#!/usr/bin/env bash
# `make test`: the whole suite against real PostgreSQL, Redis, Docker and Chromium.
# Arguments are passed to pytest (e.g. `make test ARGS="-k tokens"`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

export DATABASE_URL=${DOCKYARD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/dockyard}
export REDIS_URL=${DOCKYARD_TEST_REDIS_URL:-redis://127.0.0.1:6379/14}
export DJANGO_DEBUG=1 DOCKYARD_RUNTIME=docker

scripts/ensure-venv.sh dev
scripts/ensure-services.sh
scripts/ensure-docker.sh
scripts/ensure-compose.sh
scripts/ensure-browser.sh
scripts/build-base-image.sh
mkdir -p var
exec .venv/bin/python -m pytest "$@"
