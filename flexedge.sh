#!/usr/bin/env bash
# Quick start on a fresh Debian/Ubuntu machine with Python 3.11+:
#   ./flexedge.sh demo   - run the demo (private broker, simulator, daemon, scripted market)
#   ./flexedge.sh test   - run the whole test suite
#   ./flexedge.sh check  - ruff (lint and format), mypy and the import-linter contracts
#   sudo ./flexedge.sh install [--start] - install (or upgrade) the systemd service flexedge
#   sudo ./flexedge.sh uninstall          - remove it, keeping /etc/flexedge and the log
#     (flexedge/config/install/install.sh says what goes where)
# Anything else is passed to the `flexedge` command inside the project's virtualenv.
# It installs what it needs: a virtualenv in .venv with the package, and Mosquitto from the
# distribution's packages when it is missing (as root, or with passwordless sudo). When the
# gsy-e wheels are there (../shared/thirdparty/gsy, or $FLEXEDGE_GSY_DIR), `test` and `check`
# install them too, for `flexedge market --engine gsy-e` and the tests against gsy-e.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
GSY_DIR=${FLEXEDGE_GSY_DIR:-../shared/thirdparty/gsy}

die() { echo "flexedge.sh: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

apt_install() {
  command -v apt-get >/dev/null || return 1
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
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

ensure_venv() {
  local py stamp="$VENV/.installed"
  py=$(pick_python) || die "Python 3.11 or newer is needed (sudo apt-get install python3)"
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$py" -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      echo "installing python3-venv ..." >&2
      apt_install python3-venv ||
        die "cannot create a virtualenv: run 'sudo apt-get install python3-venv' and retry"
      "$py" -m venv "$VENV"
    fi
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "installing flexedge and its dependencies into $VENV ..." >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    touch "$stamp"
  fi
}

# gsy-e and gsy-framework are not on PyPI: their wheels go in without their (old, pinned)
# dependencies, and requirements.txt adds what importing the balancing market and agent needs.
# A requirement flexedge already installed is left as it is: its pin (click==8.1.7) would
# break import-linter and sqlite-utils, and gsy-e imports fine with flexedge's version.
# Re-run when the wheels change.
ensure_gsy() {
  local stamp="$VENV/.gsy-installed" wanted="$VENV/.gsy-requirements.txt" wheels
  [ -d "$GSY_DIR" ] || return 0
  wheels=$(ls "$GSY_DIR"/*.whl 2>/dev/null) || return 0
  if [ -f "$stamp" ] && [ -z "$(find "$GSY_DIR" -newer "$stamp" -print -quit)" ]; then return 0; fi
  echo "installing gsy-e from $GSY_DIR into $VENV ..." >&2
  # shellcheck disable=SC2086  # one argument per wheel
  "$VENV/bin/python" -m pip install -q --no-deps $wheels
  "$VENV/bin/python" - "$GSY_DIR/requirements.txt" >"$wanted" <<'PY'
import re
import sys
from importlib import metadata

for line in open(sys.argv[1], encoding="utf-8"):
    name = re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0]
    if not name or name.startswith("#"):
        continue
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        print(line.strip())
PY
  [ ! -s "$wanted" ] || "$VENV/bin/python" -m pip install -q -r "$wanted"
  touch "$stamp"
}

ensure_mosquitto() {
  if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; then return 0; fi
  echo "installing mosquitto from the distribution's packages ..." >&2
  apt_install mosquitto mosquitto-clients ||
    die "Mosquitto is needed: run 'sudo apt-get install mosquitto mosquitto-clients' and retry"
}

cmd=${1:-help}
case "$cmd" in
  demo) ensure_venv; ensure_mosquitto; shift; exec "$VENV/bin/flexedge" demo "$@" ;;
  test) ensure_venv; ensure_gsy; ensure_mosquitto; shift; exec "$VENV/bin/python" -m pytest "$@" ;;
  check) ensure_venv; ensure_gsy; "$VENV/bin/ruff" check . && "$VENV/bin/ruff" format --check . &&
    "$VENV/bin/mypy" && exec "$VENV/bin/lint-imports" ;;
  # The installer needs no .venv here: it makes its own in /opt/flexedge.
  install|uninstall) exec flexedge/config/install/install.sh "$@" ;;
  help|-h|--help) sed -n '2,14p' "$0" ;;
  *) ensure_venv; ensure_mosquitto; exec "$VENV/bin/flexedge" "$@" ;;
esac
