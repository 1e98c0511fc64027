"""``python -m driver sandbox up|down|status|reset``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sandbox.platform import PartFailed, Sandbox, SandboxFailed


def run(action: str, folder: str | None, as_json: bool) -> int:
    """One line per part that failed (which, why, its log) on stderr and exit 1; no traceback."""
    try:
        return _run(action, folder, as_json)
    except (SandboxFailed, PartFailed) as exc:
        for failure in getattr(exc, "failures", [exc]):
            line = f"sandbox {action}: {failure.part} failed: {failure.reason} (log: {failure.log})"
            print(line, file=sys.stderr)
        return 1


def traffic(argv: list[str], folder: str | None) -> int:
    """``sandbox traffic``: the bounded load generator (sandbox/traffic.py), by default against the
    sandbox's ingress once it has one."""
    from sandbox import traffic as load

    sandbox = Sandbox(Path(folder) if folder else None)
    ingress = sandbox.status().get("ingress", {}) if sandbox.state else {}
    return load.main(argv, default_url=ingress.get("url"), default_host=ingress.get("host"))


def _run(action: str, folder: str | None, as_json: bool) -> int:
    sandbox = Sandbox(Path(folder) if folder else None)
    if action == "down":
        sandbox.down()
        print(f"sandbox stopped ({sandbox.dir})")
        return 0
    if action == "up":
        status = sandbox.up()
    elif action == "reset":
        status = sandbox.reset()
    else:
        if not sandbox.state:
            print(json.dumps({"dir": str(sandbox.dir), "running": {}}) if as_json else "sandbox: not created")
            return 1
        status = sandbox.status()
    status["pods"] = sandbox.pods()
    if as_json:
        print(json.dumps(status, indent=2))
        return 0 if all(status["running"].values()) else 1
    print(f"sandbox {action}: {sandbox.dir}")
    for name, ok in status["running"].items():
        print(f"  {name:<12} {'running' if ok else 'STOPPED'}")
    print(f"  kubeconfig {status['kubeconfig']} (namespace {status['namespace']})")
    print(f"  postgres   127.0.0.1:{status['postgres']['port']} database {status['postgres']['database']}")
    print(f"  s3         {status['s3']['endpoint']} bucket {status['s3']['bucket']}")
    print(f"  redis      {status['redis']['url']}")
    print(f"  receiver   {status['receiver']['url']} (GET /_received)")
    print(f"  ingress    {status['ingress']['url']} (Host: {status['ingress']['host']})")
    print(f"  prometheus {status['prometheus']['url']} (rules: {status['prometheus']['rules_dir']})")
    print(f"  alertmanager {status['alertmanager']['url']}")
    for service, pods in sorted(status["pods"].items()):
        shown = ", ".join(
            f"{p['name']} {p['phase']}{'' if p['ready'] else ' (not ready)'} {' '.join(p['addresses'])}"
            for p in pods
        )
        print(f"  pods of {service}: {shown}")
    return 0 if all(status["running"].values()) else 1
