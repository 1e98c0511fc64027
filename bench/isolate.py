"""Benchmark: time from the command to the first refused request through the Ingress.

On a sandbox of its own, a client polls the api through the Ingress every 20 ms. Each round, side by
side:

(a) runbook 002's way: `kubectl scale deployment/api --replicas=0` plus the maintenance snippet
    annotation (`nginx.ingress.kubernetes.io/server-snippet: return 503;`, which ingress-nginx ignores
    by default: the refusal comes from the scale);
(b) ours: `python -m driver isolate --service api --mode network --yes`, which captures the api's
    evidence first, records the prior state, adds the deny-all policy and checks a client is refused.

The platform is put back after each (kubectl scale back and the annotation removed; `release`) and
the client must be served again before the next. Last line: isolate_vs_kubectl=<median (b) / median (a)>.
Target <= 1.5.

    .venv/bin/python -m bench.isolate [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

from bench.common import median, sandbox
from driver import ROOT

SNIPPET = "nginx.ingress.kubernetes.io/server-snippet"


class Client:
    """Polls the api through the Ingress; ``first_refused_after(t)`` is the first refusal seen after t."""

    def __init__(self, ingress: dict):
        self.url, self.host = ingress["url"] + "/health/ready", ingress["host"]
        self.refused: list[float] = []
        self.served: list[float] = []
        self.answered = threading.Condition()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def status(self) -> int:
        request = urllib.request.Request(self.url, headers={"Host": self.host})
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def run(self) -> None:
        while not self.stop.wait(0.02):  # a request every 20 ms until stopped
            status = self.status()
            with self.answered:
                (self.served if 200 <= status < 300 else self.refused).append(time.perf_counter())
                self.answered.notify_all()

    def wait(self, refused: bool, after: float, timeout: float = 120) -> float:
        """The first of two answers in a row of the kind wanted after ``after`` (one stray answer of a
        worker of nginx's previous configuration, just after a reload, does not count)."""
        seen, other = (self.refused, self.served) if refused else (self.served, self.refused)

        def first_of_two():
            later = [t for t in seen if t > after]
            for first, second in itertools.pairwise(later):
                if not any(first < t < second for t in other):
                    return first
            return None

        with self.answered:
            if self.answered.wait_for(lambda: first_of_two() is not None, timeout):
                return first_of_two()
        sys.exit(f"the client was not {'refused' if refused else 'served'} within {timeout}s")


def kubectl(*args: str) -> None:
    subprocess.run(
        ["kubectl", "-n", os.environ["BENCH_NAMESPACE"], *args],
        check=True,
        capture_output=True,
        env={**os.environ, "KUBECONFIG": os.environ["BENCH_KUBECONFIG"]},
    )


def runbook(client: Client) -> float:
    started = time.perf_counter()
    kubectl("scale", "deployment/api", "--replicas=0")
    kubectl("annotate", "ingress", "matchbook", f"{SNIPPET}=return 503;", "--overwrite")
    took = client.wait(True, started) - started
    kubectl("annotate", "ingress", "matchbook", f"{SNIPPET}-")
    kubectl("scale", "deployment/api", "--replicas=2")
    client.wait(False, time.perf_counter())
    return took


def ours(client: Client) -> float:
    incident = f"BENCH-ISO-{uuid.uuid4().hex[:6]}"
    common = ["--yes", "--incident", incident, "--incidents-dir", os.environ["BENCH_INCIDENTS"]]
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "driver", "isolate", "--service", "api", *common],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    took = client.wait(True, started) - started
    if proc.wait() != 0:
        sys.exit(f"isolate failed: {proc.stderr.read()[-2000:]}")
    subprocess.run(
        [sys.executable, "-m", "driver", "release", "--service", "api", *common],
        cwd=ROOT,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    client.wait(False, time.perf_counter())
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with sandbox(EMERGENCY_SANDBOX_READY_DELAY="0.5") as (box, status):
        os.environ.update(
            BENCH_NAMESPACE=status["namespace"],
            BENCH_KUBECONFIG=status["kubeconfig"],
            BENCH_INCIDENTS=str(box.dir / "incidents"),
        )
        client = Client(status["ingress"])
        client.thread.start()
        client.wait(False, 0)
        a, b = [], []
        try:
            for n in range(args.rounds):
                a.append(runbook(client))
                b.append(ours(client))
                print(f"round {n + 1}: (a) kubectl {a[-1]:.2f}s, (b) isolate {b[-1]:.2f}s", flush=True)
        finally:
            client.stop.set()
    print(
        f"(a) kubectl scale + snippet: median {median(a):.2f}s; (b) isolate, evidence first: {median(b):.2f}s"
    )
    print(f"isolate_vs_kubectl={median(b) / median(a):.2f}")


if __name__ == "__main__":
    main()
