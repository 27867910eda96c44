# Shared by the set-up scripts: messages, waiting on a condition, and installing a Debian
# package when we are root on Debian (otherwise saying what to run).

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31mError: %s\033[0m\n' "$*" >&2; exit 1; }

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds or time runs out.
wait_until() {
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

# apt_install HINT PACKAGE...: installs the packages, or dies telling the person what to run.
apt_install() {
  local hint=$1; shift
  can_apt || die "$hint (as root: apt-get install -y $*)"
  say "Installing $* from Debian packages"
  if [ ! -f /var/lib/apt/periodic/dockyard-updated ] ; then
    apt-get update -qq && mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/dockyard-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

# url_part URL host|port DEFAULT_PORT: host or port of a postgres:// or redis:// URL.
url_part() {
  local rest=${1#*://}
  rest=${rest%%/*}
  rest=${rest##*@}
  local host=${rest%%:*} port=${rest##*:}
  [ "$port" = "$rest" ] && port=$3
  if [ "$2" = host ]; then echo "${host:-127.0.0.1}"; else echo "$port"; fi
}

is_local() { case "$1" in 127.*|localhost|::1|'') return 0 ;; *) return 1 ;; esac; }
