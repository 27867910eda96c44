#!/usr/bin/env bash
# Host firewall rules for the workloads bridge (idempotent; needs root and iptables).
# Docker alone keeps workloads apart (inter-container traffic off) but cannot stop them from
# opening connections to the host itself (its database, broker, web internals) or to the
# cloud metadata address. These rules do:
#   - INPUT: new connections from the workloads bridge to the host are rejected (replies to
#     connections the host opened, e.g. the notebook proxy's, still pass);
#   - DOCKER-USER: traffic from the bridge to 169.254.169.254 is rejected.
set -euo pipefail
BRIDGE=${DOCKYARD_DOCKER_BRIDGE:-dy-workloads}

command -v iptables >/dev/null || { echo "iptables is missing: workload firewall rules not applied" >&2; exit 1; }
rule() { local chain=$1; shift; iptables -C "$chain" "$@" 2>/dev/null || iptables -I "$chain" "$@"; }

rule INPUT -i "$BRIDGE" -m conntrack --ctstate NEW -j REJECT --reject-with icmp-port-unreachable
iptables -L DOCKER-USER -n >/dev/null 2>&1 || iptables -N DOCKER-USER
rule DOCKER-USER -i "$BRIDGE" -d 169.254.169.254/32 -j REJECT --reject-with icmp-port-unreachable
