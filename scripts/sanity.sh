#!/usr/bin/env bash
# Runs `ansible-test sanity` (every test that needs no container) on the emergency.ops collection with
# the project's ansible-core and Python. ansible-test builds one virtualenv per test under
# ~/.ansible/test/venv (kept between runs) and installs their requirements from the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py="$root/.venv/bin/python"
version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pip_version=$("$py" - <<'PY'
import pathlib, re, ansible_test
source = (pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()
print(re.search(r"pip='([0-9.]+)'", source).group(1))
PY
)
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
bootstrap="$cache/get_pip_${pip_version//./_}.py"
[ -f "$bootstrap" ] || cp scripts/ansible-test-get-pip.py "$bootstrap"
cd collections/ansible_collections/emergency/ops
trap 'rm -rf "$PWD/tests/output"' EXIT
"$root/.venv/bin/ansible-test" sanity --local --python "$version" --color no "$@" 2>&1 \
  | grep -v -e '^WARNING: Using locale' -e 'is ignored: it is neither a file nor a directory'
