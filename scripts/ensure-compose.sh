#!/usr/bin/env bash
# Makes sure a Compose client answers (the deploy tests validate docker-compose.yml with it):
# the `docker compose` plugin if present, else Debian's docker-compose package.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

docker compose version >/dev/null 2>&1 && exit 0
command -v docker-compose >/dev/null && exit 0
apt_install "No Compose client (docker compose or docker-compose) is installed" docker-compose
