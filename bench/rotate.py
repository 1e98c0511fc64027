"""Benchmark: failed requests under constant load while the database password is rotated.

On a sandbox of its own, the load generator sends 40 requests a second through the Ingress to the api
(`/api/markets`, a database query per request, with the API key; `/health/database`), during:

(a) ours: `python -m driver rotate-secrets --secret postgres-secret --yes`;
(b) runbook 000's way: a new password with `ALTER ROLE app PASSWORD ...`, the new Secret applied, then
    `kubectl rollout restart` of every Deployment, with no ordering between the role and the pods.

Each run lasts until its rotation is over and the api has served for 5 s more. Last line:
rotate_failed_requests=<n> runbook_failed_requests=<m>. Target n = 0.

    .venv/bin/python -m bench.rotate
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from bench.common import sandbox
from driver import ROOT
from sandbox import traffic


def under_load(status: dict, action) -> traffic.Report:
    """``action()`` under load, then 5 more seconds of it: ``/api/markets`` (a query on the database per
    request, with the API key) and ``/health/database``."""
    ingress = status["ingress"]
    key = Path(status["postgres"]["password_file"]).parent / "api-admin-key"
    after, settled = [], threading.Event()

    def each_second(_summary: dict) -> None:  # the load generator's per-second report
        if after:
            after.append(1)
            if len(after) > 5:
                settled.set()

    load = traffic.start(
        ingress["url"], rps=40, seconds=600, paths=["/api/markets", "/health/database"], host=ingress["host"],
        timeout=5, on_second=each_second, headers={"X-API-Key": key.read_text().strip()},
    )  # fmt: skip
    try:
        action()
        after.append(1)
        settled.wait(60)
    finally:
        load.stop()
    return load.wait(30)


def ours() -> None:
    incident = f"BENCH-ROT-{uuid.uuid4().hex[:6]}"
    proc = subprocess.run(
        [sys.executable, "-m", "driver", "rotate-secrets", "--secret", "postgres-secret", "--yes",
         "--incident", incident, "--incidents-dir", os.environ["BENCH_INCIDENTS"]],
        cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"rotate-secrets failed:\n{proc.stdout[-3000:]}")


def runbook(status: dict) -> None:
    """ALTER ROLE, the Secret, rollout restart of every Deployment (as the runbook's commands do)."""
    pg = status["postgres"]
    password = secrets.token_urlsafe(24)
    kubectl = ["kubectl", "-n", status["namespace"]]
    env = {**os.environ, "KUBECONFIG": status["kubeconfig"]}
    secret = subprocess.run(
        [*kubectl, "get", "secret", "postgres-secret", "-o", "jsonpath={.data.username}"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    user = base64.b64decode(secret.stdout).decode()
    admin = psycopg.connect(
        host=pg["host"], port=pg["port"], user=pg["admin_user"],
        password=Path(pg["admin_password_file"]).read_text().strip(), dbname="postgres", autocommit=True,
    )  # fmt: skip
    with admin:
        admin.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(user), sql.Literal(password))
        )
    url = f"postgresql://{user}:{password}@{pg['host']}:{pg['port']}/{pg['database']}"
    patch = {"password": password, "url": url}
    data = ",".join(f'"{k}":"{base64.b64encode(v.encode()).decode()}"' for k, v in patch.items())
    subprocess.run(
        [*kubectl, "patch", "secret", "postgres-secret", "--type", "merge", "-p", '{"data":{' + data + "}}"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    for deployment in ("indexer", "api", "crank"):
        subprocess.run([*kubectl, "rollout", "restart", f"deployment/{deployment}"], env=env, check=True,
                       capture_output=True)  # fmt: skip
    for deployment in ("indexer", "api", "crank"):
        subprocess.run([*kubectl, "rollout", "status", f"deployment/{deployment}", "--timeout=300s"], env=env,
                       check=True, capture_output=True)  # fmt: skip


def main() -> None:
    with sandbox(EMERGENCY_SANDBOX_READY_DELAY="0.5") as (box, status):
        os.environ["BENCH_INCIDENTS"] = str(box.dir / "incidents")
        a = under_load(status, ours)
        print(f"(a) rotate-secrets: sent {a.sent}, failed {a.failed} {a.statuses}", flush=True)
        b = under_load(status, lambda: runbook(status))
        print(f"(b) runbook 000: sent {b.sent}, failed {b.failed} {b.statuses}", flush=True)
    print(f"rotate_failed_requests={a.failed} runbook_failed_requests={b.failed}")


if __name__ == "__main__":
    main()
