"""Benchmark: how fast `watch` rolls a faulty release back, against the least it can take.

On a sandbox of its own, under 20 requests/s through the Ingress, api is released as the `faulty`
build (a fifth of its API requests answered 500). `watch` measures an error-rate trigger every
INTERVAL seconds over a window of INTERVAL seconds and must see CONSECUTIVE breaches in a row. The
time from its first breaching measurement to the rollback confirmed is divided by
INTERVAL x CONSECUTIVE, the least a watch that needs that many breaches can take (Argo Rollouts'
analysis takes interval x (failureLimit + 1) plus the rollout). Then 10 s more of load count the
requests that still fail.

Last line: watch_latency_ratio=<ratio> failed_requests_after_rollback=<n>. Targets <= 1.2 and 0.

    .venv/bin/python -m bench.watch [--interval 5] [--consecutive 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import sandbox
from driver import ROOT

TRIGGER = """
- name: error-rate
  query: >-
    (sum(rate(http_requests_total{{namespace="{{namespace}}",service="{{service}}",code=~"5..",route!~"/health.*|/metrics"}}[{{period}}])) or vector(0))
    / sum(rate(http_requests_total{{namespace="{{namespace}}",service="{{service}}",route!~"/health.*|/metrics"}}[{{period}}]))
  period: {period}s
  consecutive: {consecutive}
  above: 0.05
  min_traffic_query: >-
    sum(rate(http_requests_total{{namespace="{{namespace}}",service="{{service}}",route!~"/health.*|/metrics"}}[{{period}}])) or vector(0)
  min_traffic: 0.5
"""  # noqa: E501 - PromQL as an inventory holds it


def traffic(status: dict, seconds: int) -> subprocess.Popen:
    ingress = status["ingress"]
    argv = [
        sys.executable,
        "-m",
        "driver",
        "sandbox",
        "traffic",
        "--url",
        ingress["url"],
        "--host",
        ingress["host"],
    ]
    argv += ["--path", "/", "--rps", "20", "--seconds", str(seconds), "--json"]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--consecutive", type=int, default=3)
    args = parser.parse_args()
    from ansible_collections.emergency.ops.plugins.module_utils.kube import Kube

    with sandbox(EMERGENCY_SANDBOX_READY_DELAY="0.5") as (box, status), tempfile.TemporaryDirectory() as work:
        triggers = Path(work) / "triggers.yml"
        triggers.write_text(TRIGGER.format(period=args.interval, consecutive=args.consecutive))
        kube = Kube(status["kubeconfig"], None, status["namespace"])
        load = traffic(status, 300)
        time.sleep(args.interval * 2)  # a window of healthy traffic first
        watch = subprocess.Popen(
            [sys.executable, "-m", "driver", "watch", "--service", "api", "--triggers", str(triggers),
             "--interval", str(args.interval), "--incidents-dir", str(box.dir / "incidents")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ),
        )  # fmt: skip
        container = kube.get("deployments", "api")["spec"]["template"]["spec"]["containers"][0]
        faulty = re.sub(r":[^:/]+$", ":faulty", container["image"])
        kube.patch("deployments", "api", {"spec": {"template": {"spec": {"containers": [
            {"name": container["name"], "image": faulty}]}}}})  # fmt: skip
        first_breach = confirmed = None
        deadline = time.monotonic() + 300
        for line in watch.stdout:
            print(line, end="", flush=True)
            if first_breach is None and " breach 1/" in line:
                first_breach = time.monotonic()
            if re.search(r"automatic rollback of revision \d+: (\S+)", line):
                if "confirmed" in line and "not-confirmed" not in line:
                    confirmed = time.monotonic()
                break
            if time.monotonic() > deadline:
                break
        watch.send_signal(signal.SIGINT)
        watch.communicate(timeout=60)
        load.send_signal(signal.SIGTERM)
        load.communicate(timeout=60)
        if first_breach is None or confirmed is None:
            sys.exit("the faulty release was not rolled back and confirmed")
        after = traffic(status, 10)
        total = json.loads(after.communicate(timeout=60)[0])["total"]
    took = confirmed - first_breach
    least = args.interval * args.consecutive
    print(f"first breach -> rollback confirmed: {took:.1f}s; interval x consecutive: {least}s")
    print(f"watch_latency_ratio={took / least:.2f} failed_requests_after_rollback={total['failed']}")


if __name__ == "__main__":
    main()
