#!/usr/bin/env bash
# Makes sure a Docker engine answers. With no DOCKER_HOST and none running, starts the local
# dockerd (installing Debian's docker.io first when root on Debian and it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

command -v docker >/dev/null || apt_install "The Docker client is missing" docker.io
firewall() {
  # The host fence: workloads stay off this host, the metadata address and private ranges;
  # builds get out only through the egress proxy. Applied on every run, from a fresh clone too.
  if [ "$(id -u)" = 0 ] && [ -z "${DOCKER_HOST:-}" ]; then
    scripts/workload-firewall.sh || say "Workload firewall rules not applied (see docs/runtime.md)."
  fi
}

if engine_up; then firewall; exit 0; fi
[ -z "${DOCKER_HOST:-}" ] || die "The Docker engine at DOCKER_HOST=$DOCKER_HOST does not answer."
command -v dockerd >/dev/null || apt_install "The Docker engine is not installed" docker.io
[ "$(id -u)" = 0 ] || die "No Docker engine is running: start it with 'sudo systemctl start docker' (or 'sudo dockerd &')."

say "Starting the Docker engine (log: /var/log/dockyard-dockerd.log)"
# setsid: the engine outlives this script and the make that called it, like a system service.
setsid dockerd >/var/log/dockyard-dockerd.log 2>&1 < /dev/null &
wait_until 60 "Docker engine" engine_up || die "The Docker engine did not answer within 60 s; see /var/log/dockyard-dockerd.log."
firewall
