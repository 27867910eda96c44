#!/usr/bin/env bash
# Browser tests drive Debian's Chromium through Playwright; no browser is ever downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

CHROMIUM=${DOCKYARD_CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || apt_install "Chromium (for the browser tests) is missing" chromium
