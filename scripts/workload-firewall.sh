#!/usr/bin/env bash
# Host fence for Dockyard's two bridges (idempotent; needs root and iptables). Docker keeps
# containers apart from each other but not from the host, the metadata address or the private
# networks around the host. This script does, on the bridge of each network Dockyard manages:
#
# Workloads (DOCKYARD_DOCKER_BRIDGE, default dy-workloads):
#   - INPUT: new connections to the host itself, on any of its addresses, are rejected
#     (replies to connections the host opened, e.g. the notebook proxy's, still pass);
#   - DOCKER-USER: the metadata address (DOCKYARD_METADATA_ADDRESS) and the private ranges
#     (10/8, 172.16/12, 192.168/16, 169.254/16, 100.64/10) are rejected, except DNS to the
#     host's name servers and the CIDRs an admin lists in DOCKYARD_WORKLOAD_EGRESS_ALLOW.
# Builds (DOCKYARD_BUILD_BRIDGE, default dy-builds):
#   - DOCKER-USER: everything is rejected; a build's only way out is Dockyard's egress proxy;
#   - INPUT: only the proxy's port (DOCKYARD_BUILD_PROXY_PORT) on the host is reachable;
#   - the cgroup DOCKYARD_BUILD_CGROUP_PARENT, under which every build step runs, gets a
#     process limit (DOCKYARD_BUILD_PIDS_LIMIT) shared by all builds at once.
#
# Each bridge gets its own chains (DY-<bridge>-IN, DY-<bridge>-OUT), rewritten atomically
# with iptables-restore, so running this again with other settings replaces the old rules.
# `workload-firewall.sh --remove` takes the chains (and the cgroup, when empty) away again.
set -euo pipefail
cd "$(dirname "$0")/.."
# Settings come from the environment, then from .env (as portal/settings.py reads them).
setting() {
  local name=$1 default=$2 value
  if [ -n "${!name+set}" ]; then echo "${!name}"; return; fi
  value=$( { grep -E "^${name}=" .env 2>/dev/null || true; } | tail -n 1 | cut -d= -f2-)
  echo "${value:-$default}"
}
WORKLOADS=$(setting DOCKYARD_DOCKER_BRIDGE dy-workloads)
BUILDS=$(setting DOCKYARD_BUILD_BRIDGE dy-builds)
METADATA=$(setting DOCKYARD_METADATA_ADDRESS 169.254.169.254)
ALLOW=$(setting DOCKYARD_WORKLOAD_EGRESS_ALLOW "")
PROXY_PORT=$(setting DOCKYARD_BUILD_PROXY_PORT 3128)
CGROUP=$(setting DOCKYARD_BUILD_CGROUP_PARENT dockyard-builds)
PIDS=$(setting DOCKYARD_BUILD_PIDS_LIMIT 4096)
PRIVATE="10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 169.254.0.0/16 100.64.0.0/10"
REJECT="-j REJECT --reject-with icmp-port-unreachable"

command -v iptables >/dev/null || { echo "iptables is missing: workload firewall rules not applied" >&2; exit 1; }

hook() { iptables -C "$1" -i "$2" -j "$3" 2>/dev/null || iptables -I "$1" -i "$2" -j "$3"; }
unhook() { while iptables -D "$1" -i "$2" -j "$3" 2>/dev/null; do :; done; }
drop_chain() { iptables -F "$1" 2>/dev/null && iptables -X "$1" 2>/dev/null || true; }
# The rules this script wrote before it kept them in chains of their own.
legacy() {
  while iptables -D INPUT -i "$WORKLOADS" -m conntrack --ctstate NEW $REJECT 2>/dev/null; do :; done
  while iptables -D DOCKER-USER -i "$WORKLOADS" -d 169.254.169.254/32 $REJECT 2>/dev/null; do :; done
}
# The name servers Docker's embedded DNS forwards to, from inside the container's network.
nameservers() {
  cat /etc/resolv.conf /run/systemd/resolve/resolv.conf 2>/dev/null \
    | awk '$1 == "nameserver" && $2 !~ /^127\./ && $2 !~ /:/ {print $2}' | sort -u
}
cgroup_dir() {
  if [ -d /sys/fs/cgroup/pids ]; then echo "/sys/fs/cgroup/pids/$CGROUP"; else echo "/sys/fs/cgroup/$CGROUP"; fi
}

if [ "${1:-}" = --remove ]; then
  for bridge in "$WORKLOADS" "$BUILDS"; do
    unhook INPUT "$bridge" "DY-$bridge-IN"; unhook DOCKER-USER "$bridge" "DY-$bridge-OUT"
    drop_chain "DY-$bridge-IN"; drop_chain "DY-$bridge-OUT"
  done
  [ -z "$CGROUP" ] || rmdir "$(cgroup_dir)" 2>/dev/null || true
  exit 0
fi

iptables -L DOCKER-USER -n >/dev/null 2>&1 || iptables -N DOCKER-USER
{
  echo "*filter"
  for bridge in "$WORKLOADS" "$BUILDS"; do echo ":DY-$bridge-IN - [0:0]"; echo ":DY-$bridge-OUT - [0:0]"; done
  echo "-A DY-$WORKLOADS-IN -m conntrack --ctstate NEW $REJECT"
  echo "-A DY-$WORKLOADS-OUT -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN"
  for server in $(nameservers); do
    echo "-A DY-$WORKLOADS-OUT -d $server/32 -p udp --dport 53 -j RETURN"
    echo "-A DY-$WORKLOADS-OUT -d $server/32 -p tcp --dport 53 -j RETURN"
  done
  for cidr in ${ALLOW//,/ }; do echo "-A DY-$WORKLOADS-OUT -d $cidr -j RETURN"; done
  for cidr in "$METADATA" $PRIVATE; do echo "-A DY-$WORKLOADS-OUT -d $cidr $REJECT"; done
  echo "-A DY-$BUILDS-IN -p tcp --dport $PROXY_PORT -j ACCEPT"
  echo "-A DY-$BUILDS-IN -m conntrack --ctstate NEW $REJECT"
  echo "-A DY-$BUILDS-OUT $REJECT"
  echo "COMMIT"
} | iptables-restore --noflush
for bridge in "$WORKLOADS" "$BUILDS"; do hook INPUT "$bridge" "DY-$bridge-IN"; hook DOCKER-USER "$bridge" "DY-$bridge-OUT"; done
legacy

if [ -n "$CGROUP" ]; then
  dir=$(cgroup_dir)
  mkdir -p "$dir" && echo "$PIDS" > "$dir/pids.max" \
    || echo "Could not limit processes of builds in $dir (see docs/runtime.md)" >&2
fi
