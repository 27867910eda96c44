#!/usr/bin/env bash
# Makes the workload base image `dockyard/base:bookworm` without a registry: debootstrap a
# minimal Debian bookworm with python3 and venv into a folder, then `docker import` it.
# Idempotent: does nothing when the image exists (FORCE=1 rebuilds).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

IMAGE=${DOCKYARD_BASE_IMAGE:-dockyard/base:bookworm}
MIRROR=${DOCKYARD_DEBIAN_MIRROR:-http://deb.debian.org/debian}

scripts/ensure-docker.sh
if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi
command -v debootstrap >/dev/null || apt_install "debootstrap (to make the base image) is missing" debootstrap
[ "$(id -u)" = 0 ] || die "Making $IMAGE needs root (debootstrap): sudo scripts/build-base-image.sh"

rootfs=$(mktemp -d /var/tmp/dockyard-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
say "Making $IMAGE with debootstrap (a few minutes, once)"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$rootfs" "$MIRROR" >/var/tmp/dockyard-debootstrap.log 2>&1 \
  || die "debootstrap failed; see /var/tmp/dockyard-debootstrap.log"
# Smaller image: no apt lists or caches; apt-get update runs again in builds that need it.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
tar -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --message "Debian bookworm minbase with python3 (dockyard)" - "$IMAGE" >/dev/null
say "Made $IMAGE"
