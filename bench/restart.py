"""Benchmark: `python -m driver restart --all` against what an operator would type instead.

The baseline is runbook 000's shell loop: `kubectl rollout restart` then `kubectl rollout status`
for each service in order. Both run against the same sandbox, alternating, several times; the
medians are compared. Last line: restart_vs_kubectl=<driver median / script median> (target <= 2).

    .venv/bin/python -m bench.restart [--repetitions N]
"""

from __future__ import annotations

import argparse
import sys
import uuid

from bench.common import median, sandbox, timed

SERVICES = ("indexer", "api", "crank")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    with sandbox() as (box, status):
        env = {"KUBECONFIG": status["kubeconfig"]}
        ns = status["namespace"]
        script = " && ".join(
            f"kubectl rollout restart deployment/{s} -n {ns} >/dev/null && "
            f"kubectl rollout status deployment/{s} -n {ns} --timeout=300s >/dev/null"
            for s in SERVICES
        )
        incidents = box.dir / "bench-incidents"
        driver, kubectl = [], []
        print(f"real pods (readiness from their probes); {args.repetitions} repetitions")
        for n in range(args.repetitions):
            kubectl.append(timed(script, env=env, shell=True))
            driver.append(
                timed(
                    [
                        sys.executable,
                        "-m",
                        "driver",
                        "restart",
                        "--all",
                        "--json",
                        "--incident",
                        f"BENCH-{uuid.uuid4().hex[:8]}",
                        "--incidents-dir",
                        str(incidents),
                    ]
                )
            )
            print(f"run {n + 1}: kubectl script {kubectl[-1]:.2f}s, driver {driver[-1]:.2f}s", flush=True)
        print(f"median: kubectl script {median(kubectl):.2f}s, driver {median(driver):.2f}s")
        print(f"restart_vs_kubectl={median(driver) / median(kubectl):.2f}")


if __name__ == "__main__":
    main()
