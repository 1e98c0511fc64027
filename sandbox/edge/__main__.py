"""``python -m sandbox.edge --state DIR --port N``: the sandbox's ingress controller (see controller.py)."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
from pathlib import Path

from sandbox.edge.controller import Controller


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.edge", description=__doc__)
    parser.add_argument("--state", required=True, type=Path, help="the sandbox's state folder")
    parser.add_argument("--port", required=True, type=int, help="nginx listens on 127.0.0.1:PORT")
    parser.add_argument("--kubeconfig", type=Path, help="default: STATE/kubeconfig")
    parser.add_argument("--targets", type=Path, help="default: STATE/prometheus/targets/pods.json")
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state = args.state.resolve()
    controller = Controller(
        state,
        args.port,
        args.kubeconfig or state / "kubeconfig",
        args.targets or state / "prometheus" / "targets" / "pods.json",
        args.nginx,
    )
    signal.signal(signal.SIGTERM, controller.stop)
    signal.signal(signal.SIGINT, controller.stop)
    try:
        return controller.run()
    finally:
        controller.shutdown()


if __name__ == "__main__":
    sys.exit(main())
