#!/usr/bin/env bash
# Runs every Molecule drill (molecule/*/) against a sandbox of its own, then stops the sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
dir=$(mktemp -d -t emergency-drill-XXXXXX)
export EMERGENCY_SANDBOX_DIR="$dir" EMERGENCY_SANDBOX_READY_DELAY=0.5 NO_COLOR=1 ANSIBLE_NOCOLOR=1
# Stops the sandbox and removes its state and its PostgreSQL home (which lives outside "$dir").
trap 'python -c "from sandbox.platform import Sandbox; Sandbox().destroy()" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
python -m driver sandbox up >/dev/null
# Every scenario phase by phase (prepare, converge, idempotence, verify, cleanup), timed: each run's
# recovery time goes to drills/history.jsonl (python -m driver drill report draws it). Exits 1 when a
# drill failed, after running the others.
python -m driver drill all
