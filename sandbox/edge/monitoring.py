"""The sandbox's Prometheus and Alertmanager configurations (Debian's 2.42 and 0.25).

Both are written by ``sandbox up`` into the state folder on every start, listen on 127.0.0.1 only
and keep their data in the state folder. Paths are written as JSON strings, which YAML reads as
they are (a state folder's path may have spaces).
"""

from __future__ import annotations

import json
from pathlib import Path

RULES_ENV = "EMERGENCY_SANDBOX_RULES_DIR"


def prometheus_config(port: int, alertmanager_port: int, targets: Path, rules_dir: Path) -> str:
    q = json.dumps
    return f"""\
# Written by `sandbox up` (sandbox/edge/monitoring.py) on every start; edits are lost.
global:
  # 1 s, not the usual minute: tests and drills must see a change (a pod failing, a rule firing)
  # within seconds of causing it.
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
# Alerting rules; a procedure adds files there and reloads (POST /-/reload, --web.enable-lifecycle).
rule_files:
  - {q(str(rules_dir / "*.yml"))}
  - {q(str(rules_dir / "*.yaml"))}
alerting:
  alertmanagers:
    - static_configs:
        - targets: [{q(f"127.0.0.1:{alertmanager_port}")}]
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: [{q(f"127.0.0.1:{port}")}]
  # The sandbox's running pods, written by the ingress controller (sandbox/edge) from the pods'
  # sandbox.local/host-ports annotation; Prometheus sees the file change at once (inotify).
  - job_name: pods
    file_sd_configs:
      - files: [{q(str(targets))}]
        refresh_interval: 5s
"""


def alertmanager_config(receiver_url: str) -> str:
    q = json.dumps
    return f"""\
# Written by `sandbox up` (sandbox/edge/monitoring.py) on every start; edits are lost.
# Every alert goes to the sandbox's receiver, which records it: GET <receiver>/_received.
route:
  receiver: sandbox-receiver
  group_by: [alertname]
  # Short waits: tests and drills see a firing alert delivered within seconds.
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: sandbox-receiver
    webhook_configs:
      - url: {q(receiver_url.rstrip("/") + "/alertmanager")}
        send_resolved: true
"""


def prometheus_argv(binary: str, config: Path, data: Path, port: int) -> list[str]:
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=6h",  # a throwaway sandbox: a short history is enough
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",  # POST /-/reload picks up new rule files
        # Firing alerts are sent again every second, not every minute: after a reload Prometheus
        # needs a few seconds to find Alertmanager again, and what fired meanwhile would wait a
        # minute otherwise (Alertmanager deduplicates the repeats).
        "--rules.alert.resend-delay=1s",
    ]


def alertmanager_argv(binary: str, config: Path, data: Path, port: int) -> list[str]:
    return [
        binary,
        f"--config.file={config}",
        f"--storage.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # one instance: no gossip port
    ]
