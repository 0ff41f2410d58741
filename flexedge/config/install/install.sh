#!/usr/bin/env bash
# Install flexedge on a Debian/Ubuntu gateway as the systemd service `flexedge`, from a checkout:
#   sudo ./flexedge.sh install [--start]   install or upgrade, enable; start (restart) with --start
#   sudo ./flexedge.sh uninstall           disable and remove the unit and /opt/flexedge
# What install puts where (run again, it upgrades flexedge and the unit, keeps the site file):
#   /opt/flexedge/.venv                    a virtualenv with flexedge built from this checkout
#   /usr/local/bin/flexedge                a link to its command, for the operator
#   user and group flexedge                system user, no login shell, home /var/lib/flexedge,
#                                          in group dialout for the RS-485 serial adapters
#   /etc/flexedge/site.yaml                from flexedge/config/sites/example.yaml, only when
#                                          there is none: an existing site file is never touched
#   /var/lib/flexedge                      the state directory, for the SQLite log (log_db)
#   /etc/systemd/system/flexedge.service   the unit, enabled
# Uninstall removes the unit, /opt/flexedge and the link, and leaves /etc/flexedge,
# /var/lib/flexedge (the log) and the user.
# --root DIR stages all of it under DIR instead of / and, instead of running useradd, usermod,
# chown and systemctl, prints them ("would run: ..."): for tests, without root. The staged
# virtualenv runs from DIR only (its scripts name DIR in their first line).
set -euo pipefail

SRC=$(cd "$(dirname "$0")/../../.." && pwd)
PREFIX=/opt/flexedge
VENV=$PREFIX/.venv
ETC=/etc/flexedge
STATE=/var/lib/flexedge
UNIT=/etc/systemd/system/flexedge.service
LINK=/usr/local/bin/flexedge
ACCOUNT=flexedge
ROOT=""

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

usage() { sed -n '2,18p' "$0"; }

# What changes the system outside the staged tree: done for real, or printed under --root.
system() {
  if [ -n "$ROOT" ]; then echo "would run:$(printf " %q" "$@")"; else "$@"; fi
}

pick_python() {
  for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

make_venv() {
  local py venv="$ROOT$VENV"
  py=$(pick_python) || die "Python 3.11 or newer is needed: apt-get install python3"
  install -d -m 0755 "$ROOT$PREFIX"
  [ -x "$venv/bin/python" ] && return 0
  say "creating the virtualenv $venv"
  if ! "$py" -m venv "$venv" 2>/dev/null; then
    rm -rf -- "$venv"
    # Debian and Ubuntu ship venv's pip bootstrap apart from python3.
    if [ -n "$ROOT" ] || ! command -v apt-get >/dev/null; then
      die "cannot create a virtualenv: run 'sudo apt-get install python3-venv' and retry"
    fi
    say "installing python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$py" -m venv "$venv"
  fi
}

# The wheel is built from a copy of the checkout: pip would otherwise leave a root-owned build/
# and egg-info in it (install runs under sudo), and a stale one could add or hide files.
install_flexedge() {
  local pip=("$ROOT$VENV/bin/python" -m pip) work wheel
  work=$(mktemp -d "${TMPDIR:-/tmp}/flexedge-install.XXXXXX")
  # shellcheck disable=SC2064  # expand now: $work is local
  trap "rm -rf -- '$work'" EXIT
  mkdir "$work/src" "$work/wheel"
  tar -C "$SRC" -cf - --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache \
    --exclude=.pytest_cache --exclude=.hypothesis --exclude='*.sqlite*' . | tar -xf - -C "$work/src"
  say "building flexedge from $SRC"
  "${pip[@]}" wheel -q --no-deps --wheel-dir "$work/wheel" "$work/src" >/dev/null
  wheel=$(echo "$work"/wheel/flexedge-*.whl)
  [ -f "$wheel" ] || die "no flexedge wheel was built in $work/wheel"
  say "installing it into $ROOT$VENV"
  # Not editable: the service must not depend on the checkout staying where it is.
  # The first adds missing dependencies; the second replaces flexedge even at the same version.
  "${pip[@]}" install -q "$wheel"
  "${pip[@]}" install -q --no-deps --force-reinstall "$wheel"
  rm -rf -- "$work"
  trap - EXIT
}

# A flexedge the operator's PATH finds, for `flexedge config check` and `flexedge status`. One
# that is not this link (a flexedge installed some other way) is left alone.
link_command() {
  local link="$ROOT$LINK"
  if [ -e "$link" ] || [ -L "$link" ]; then
    if [ "$(readlink -- "$link")" != "$VENV/bin/flexedge" ]; then
      say "left $link alone (not a link to $VENV/bin/flexedge); use $VENV/bin/flexedge"
      return 0
    fi
  fi
  install -d -m 0755 "$(dirname -- "$link")"
  ln -sfn -- "$VENV/bin/flexedge" "$link"
}

make_account() {
  local group=--user-group
  # A group flexedge left from before (useradd --user-group would refuse it): join it.
  if [ -z "$ROOT" ] && getent group "$ACCOUNT" >/dev/null; then group="--gid=$ACCOUNT"; fi
  if [ -n "$ROOT" ] || ! getent passwd "$ACCOUNT" >/dev/null; then
    system useradd --system "$group" --home-dir "$STATE" --no-create-home \
      --shell /usr/sbin/nologin --comment "flexedge site controller" "$ACCOUNT"
  fi
  # The unit adds dialout too (SupplementaryGroups=); membership also serves
  # `sudo -u flexedge flexedge ...` by hand.
  if [ -n "$ROOT" ] || getent group dialout >/dev/null; then
    system usermod --append --groups dialout "$ACCOUNT"
  fi
}

# The unit reads the site file through group flexedge; nobody else may (it holds the broker's
# password). The state directory is the service's: systemd would make it at start
# (StateDirectory=), it is made here so that the log's place exists before the first start.
make_dirs() {
  install -d -m 0750 "$ROOT$ETC" "$ROOT$STATE"
  system chown "root:$ACCOUNT" "$ROOT$ETC"
  system chown "$ACCOUNT:$ACCOUNT" "$ROOT$STATE"
}

install_site_file() {
  local site="$ROOT$ETC/site.yaml" example="$SRC/flexedge/config/sites/example.yaml"
  if [ -e "$site" ]; then
    say "kept the existing $site"
    return 0
  fi
  # The example's log_db is relative (beside the file, here the read-only /etc/flexedge):
  # the installed file names the state directory instead.
  sed "s|^log_db:.*|log_db: $STATE/flexedge.sqlite    # the unit's StateDirectory|" \
    "$example" >"$site.new"
  grep -q "^log_db: $STATE/" "$site.new" || die "no log_db line to set in $example"
  chmod 0640 "$site.new"
  mv -- "$site.new" "$site"
  system chown "root:$ACCOUNT" "$site"
  say "installed $site from $example: edit it for this site"
}

# A site file that is wrong stops the service with exit 78; say so now rather than at start.
check_site_file() {
  local site="$ROOT$ETC/site.yaml" out
  if out=$("$ROOT$VENV/bin/flexedge" config check "$site" 2>&1); then
    say "$out"
    case "$out" in
      *", log $STATE/"*) ;;
      *) say "warning: log_db is outside $STATE, the only directory the service may write" ;;
    esac
  else
    echo "$out" >&2
    say "warning: $site has problems; fix them before starting the service"
  fi
}

do_install() {
  local start=$1
  make_venv
  install_flexedge
  say "$("$ROOT$VENV/bin/flexedge" --version)"
  link_command
  make_account
  make_dirs
  install_site_file
  install -D -m 0644 "$SRC/flexedge/config/systemd/flexedge.service" "$ROOT$UNIT"
  say "installed $ROOT$UNIT"
  system systemctl daemon-reload
  system systemctl enable flexedge.service
  if [ "$start" = 1 ]; then
    # restart, not start: after an upgrade the running daemon is the old version.
    system systemctl restart flexedge.service
  elif [ -z "$ROOT" ] && systemctl is-active --quiet flexedge.service; then
    say "flexedge is running the version before this install: systemctl restart flexedge"
  fi
  check_site_file
}

do_uninstall() {
  if [ -e "$ROOT$UNIT" ]; then
    system systemctl disable --now flexedge.service
    rm -f -- "$ROOT$UNIT"
    system systemctl daemon-reload
  fi
  rm -rf -- "${ROOT}${PREFIX:?}"
  if [ "$(readlink -- "$ROOT$LINK" 2>/dev/null)" = "$VENV/bin/flexedge" ]; then
    rm -f -- "$ROOT$LINK"
  fi
  say "removed the unit, $PREFIX and $LINK; kept $ETC, $STATE (the log) and the user $ACCOUNT"
}

main() {
  local action="" start=0
  while [ $# -gt 0 ]; do
    case "$1" in
      install|uninstall) action=$1 ;;
      --start) start=1 ;;
      --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift ;;
      --root=*) ROOT=${1#--root=} ;;
      -h|--help) usage; exit 0 ;;
      *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
  done
  [ -n "$action" ] || { usage >&2; die "install or uninstall?"; }
  if [ -n "$ROOT" ]; then
    mkdir -p -- "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
    [ "$ROOT" != / ] || ROOT=""
  fi
  if [ -z "$ROOT" ]; then
    [ "$(id -u)" = 0 ] || die "run it as root: sudo ./flexedge.sh $action"
    # Checked before anything changes: without a running systemd (a container, say) the
    # install would stop at daemon-reload half done. /run/systemd/system is sd_booted()'s test.
    if ! command -v systemctl >/dev/null || [ ! -d /run/systemd/system ]; then
      die "systemd is not running here: this installs a systemd service (--root DIR stages it)"
    fi
  fi
  "do_$action" "$start"
}

main "$@"
