"""Benchmark: from `incident open` to the last channel's request arriving, against curl.

On a sandbox of its own, each round, side by side:

(a) the runbooks' way: a shell script with one `curl` per channel (Slack webhook, PagerDuty Events
    v2 trigger, Statuspage incident, the JSON webhook), one after another, with the same payloads;
(b) ours: `python -m driver incident open --title ... --severity P1 --service api`, which also writes
    the shared record, claims each delivery before sending it and records what became of it.

Each is timed from its start to the moment the receiver recorded its last request (the receiver's
own clock, on the same machine). Last line: notify_vs_curl=<median (b) / median (a)>. Target <= 2.

    .venv/bin/python -m bench.notify [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from bench.common import median, sandbox
from driver import ROOT

SCRIPT = """set -e
incident={incident}
curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' "$(cat {slack_file})" \\
  -d "{{\\"text\\": \\"CRITICAL INCIDENT ALERT P1: api 5xx ($incident)\\"}}"
curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' {receiver}/v2/enqueue \\
  -d "{{\\"routing_key\\": \\"$(cat {pd_file})\\", \\"event_action\\": \\"trigger\\", \\"dedup_key\\": \\"$incident\\", \\"payload\\": {{\\"summary\\": \\"api 5xx\\", \\"source\\": \\"matchbook\\", \\"severity\\": \\"error\\"}}}}"
curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -H "Authorization: OAuth $(cat {sp_file})" \\
  {receiver}/v1/pages/matchbook/incidents \\
  -d "{{\\"incident\\": {{\\"name\\": \\"api 5xx ($incident)\\", \\"status\\": \\"investigating\\", \\"components\\": {{\\"api\\": \\"partial_outage\\"}}}}}}"
curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $(cat {hook_file})" \\
  {receiver}/hooks/incidents -d "{{\\"incident\\": \\"$incident\\", \\"step\\": \\"opened\\"}}"
"""  # noqa: E501 - one curl line per channel, as a runbook has them


def arrivals(receiver: str, incident: str) -> list[float]:
    with urllib.request.urlopen(receiver + "/_received", timeout=10) as answer:
        items = json.loads(answer.read())
    return [
        datetime.datetime.fromisoformat(i["received_at"].replace("Z", "+00:00")).timestamp()
        for i in items
        if incident in json.dumps(i.get("body"))
    ]


def last_arrival(receiver: str, incident: str, expected: int, timeout: float = 60) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        seen = arrivals(receiver, incident)
        if len(seen) >= expected:
            return max(seen)
        time.sleep(0.05)
    sys.exit(f"{incident}: {len(arrivals(receiver, incident))} of {expected} requests arrived")


def runbook(status: dict, script_dir: Path) -> float:
    incident = f"BENCH-CURL-{uuid.uuid4().hex[:6]}"
    receiver = status["receiver"]
    script = script_dir / f"{incident}.sh"
    script.write_text(
        SCRIPT.format(
            incident=incident,
            receiver=shlex.quote(receiver["url"]),
            slack_file=shlex.quote(receiver["slack_webhook_url_file"]),
            pd_file=shlex.quote(receiver["pagerduty_routing_key_file"]),
            sp_file=shlex.quote(receiver["statuspage_api_key_file"]),
            hook_file=shlex.quote(receiver["webhook_token_file"]),
        )
    )
    started = time.time()
    subprocess.run(["bash", str(script)], check=True, stdin=subprocess.DEVNULL)
    return last_arrival(receiver["url"], incident, 4) - started


def ours(status: dict, incidents: Path) -> float:
    incident = f"BENCH-OURS-{uuid.uuid4().hex[:6]}"
    argv = [sys.executable, "-m", "driver", "incident", "open", "--title", "api 5xx", "--severity", "P1"]
    argv += ["--service", "api", "--id", incident, "--incidents-dir", str(incidents)]
    started = time.time()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        sys.exit(f"incident open failed: {proc.stderr[-2000:]}")
    return last_arrival(status["receiver"]["url"], incident, 4) - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with (
        sandbox(EMERGENCY_SANDBOX_READY_DELAY="0.5") as (box, status),
        tempfile.TemporaryDirectory() as scripts,
    ):
        os.chmod(scripts, 0o700)
        a, b = [], []
        for n in range(args.rounds):
            a.append(runbook(status, Path(scripts)))
            b.append(ours(status, box.dir / "incidents"))
            print(f"round {n + 1}: (a) curl {a[-1]:.3f}s, (b) incident open {b[-1]:.3f}s", flush=True)
    print(f"(a) one curl per channel: median {median(a):.3f}s; (b) incident open: median {median(b):.3f}s")
    print(f"notify_vs_curl={median(b) / median(a):.2f}")


if __name__ == "__main__":
    main()
