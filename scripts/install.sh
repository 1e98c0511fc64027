#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine: the server programs the sandbox runs
# (from Debian's packages) and the Python virtualenv in .venv. Idempotent: a second run installs
# nothing when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, keyed by the file (a program, a font) that proves they are installed. PostgreSQL's server
# programs live in /usr/lib/postgresql/<major>/bin, the major being the distribution's (15 on Debian
# 12, 17 on Debian 13, 16 on Ubuntu 24.04): the `postgresql` metapackage installs that one, and any
# major's pg_ctl counts.
declare -A need=(
  [/usr/bin/redis-server]=redis-server
  [/usr/bin/kubectl]=kubernetes-client
  [/usr/bin/pgbackrest]=pgbackrest
  [/usr/sbin/nginx]=nginx
  [/usr/bin/prometheus]=prometheus
  [/usr/bin/prometheus-alertmanager]=prometheus-alertmanager
  # The post-mortem page and the drill report are checked in a real headless browser.
  [/usr/bin/chromium]=chromium
  [/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf]=fonts-dejavu-core
)
missing=()
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || missing+=(postgresql)
for prog in "${!need[@]}"; do
  [ -e "$prog" ] || missing+=("${need[$prog]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start their own default servers on machines with an init system; the sandbox
# runs its own instances on free ports, so those are left alone.

# Python virtualenv, rebuilt only when the pinned dependencies changed.
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ sandbox/pyproject.toml -nt "$stamp" ] \
  || [ constraints.txt -nt "$stamp" ]; then
  echo "install: Python virtualenv in .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # The pip that ships with the venv is too old for this dependency set.
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade 'pip==26.3' 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]' -e ./sandbox 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import driver, sandbox, ansible_runner, kubernetes'
  touch "$stamp"
fi
# The collection's module_utils are shared by the modules, the driver, the sandbox, tests, bench and
# molecule's helper scripts: one .pth file puts collections/ on the virtualenv's path for all of them.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n' "$PWD/collections" >"$site/emergency-collections.pth"
