#!/usr/bin/env bash
# make demo: the sandbox platform serving traffic, then the main jobs against it. Every service is
# restarted while the load generator sends requests through the ingress, and the failed requests are
# counted (0 expected: the rolling updates keep ready pods serving); then a backup and a restore. All
# of it is one incident: opened first (the receiver answers as Slack, PagerDuty and Statuspage),
# every run on its shared record, resolved at the end and its post-mortem draft written.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
"$py" -m driver sandbox up
"$py" -m driver list
export EMERGENCY_INCIDENT="INC-DEMO-$(date -u +%Y%m%d-%H%M%S)"
"$py" -m driver incident open --title "demo: ordered restart and database restore" --severity P2 \
  --service api --message "planned drill of the restart and restore procedures"
report=$(mktemp)
trap 'rm -f "$report"' EXIT
echo "demo: 20 requests/s to the api through the ingress while every service restarts"
"$py" -m driver sandbox traffic --rps 20 --seconds 600 --path / --json >"$report" &
load=$!
"$py" -m driver restart --all --reason "demo: ordered restart of every service under load"
sleep 3 # a few more seconds of load once the last service is back
kill -TERM "$load"
wait "$load" || true # the load generator reports and exits 130 when stopped
"$py" - "$report" <<'PY'
import json, sys
total = json.load(open(sys.argv[1]))["total"]
print(f"demo: during the restart {total['sent']} requests, {total['failed']} failed "
      f"(statuses {total['statuses']}, no answer {total['failures'] or 0})")
PY
"$py" -m driver backup --reason "demo: back up the database to the bucket"
"$py" -m driver restore --backup latest --yes --reason "demo: restore the newest backup beside the live database and swap it in"
"$py" -m driver incident resolve --message "restart and restore done; every service ready" \
  --root-cause "a drill, not a fault"
"$py" -m driver incident show
"$py" -m driver incident report
