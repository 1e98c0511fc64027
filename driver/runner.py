"""Runs a playbook with ansible-runner and turns its events into steps, outputs and errors.

Nothing here reads stdout: each task's outcome comes from the runner's events, and the procedure's
outputs from the ``set_stats`` data carried by the final ``playbook_on_stats`` event.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driver import ROOT, runenv
from driver.reaper import Guardian
from driver.results import Step

# Structural tasks (including a role, validating its arguments) are only worth a step when they fail.
STRUCTURAL = {
    "ansible.builtin.include_role",
    "ansible.builtin.validate_argument_spec",
    "include_role",
    "validate_argument_spec",
}

TASK_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}


@dataclass
class RunOutcome:
    status: str  # successful, failed, canceled, timeout
    rc: int
    steps: list[Step] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)  # failed tasks with their result
    stopped: list[int] = field(default_factory=list)  # processes still running after the playbook ended
    environment: list[str] = field(default_factory=list)  # names of the operator's variables passed on


def _message(res: dict[str, Any]) -> str:
    text = res.get("msg") or res.get("message") or ""
    if not isinstance(text, str):
        text = str(text)
    # A loop says only "One or more items failed": each failed item's own message, by its label.
    failed = [r for r in res.get("results") or [] if isinstance(r, dict) and r.get("failed")]
    if failed:
        items = [f"{r.get('_ansible_item_label', r.get('item', ''))}: {_message(r)}" for r in failed]
        text = "; ".join(items)
    return text if len(text) <= 2000 else text[:1997] + "..."


def run_playbook(
    playbook: str,
    inventory: str,
    extravars: dict[str, Any],
    private_data_dir: Path,
    ident: str,
    check: bool,
    verbose: bool,
    on_step: Callable[[Step], None],
    cancel: threading.Event,
    pass_env: tuple[str, ...] = (),
) -> RunOutcome:
    import ansible_runner.interface

    outcome = RunOutcome(status="failed", rc=1)

    def event_handler(event: dict[str, Any]) -> bool:
        data = event.get("event_data", {})
        kind = event.get("event")
        if kind in TASK_EVENTS:
            res = data.get("res") or {}
            status = TASK_EVENTS[kind]
            ignored = bool(data.get("ignore_errors"))
            if status == "ok" and res.get("changed"):
                status = "changed"
            if data.get("task_action") in STRUCTURAL and status in ("ok", "skipped"):
                return True
            step = Step(
                name=data.get("task", ""),
                host=data.get("host", ""),
                status=status,
                changed=bool(res.get("changed")),
                duration=round(float(data.get("duration") or 0.0), 3),
                message=_message(res) if status in ("failed", "unreachable") or verbose else "",
            )
            outcome.steps.append(step)
            if status in ("failed", "unreachable") and not ignored:
                outcome.failures.append({"step": step, "res": res, "unreachable": status == "unreachable"})
            on_step(step)
        elif kind == "playbook_on_stats":
            outcome.stats = data.get("artifact_data") or {}
        return True  # keep the event in the artifacts too

    venv_bin = str(Path(sys.executable).parent)
    cmdline = ["--check"] if check else []
    # Every process of the run carries the guardian's marker; none outlives the run or the driver.
    guardian = Guardian()
    try:
        runner = ansible_runner.interface.init_runner(
            private_data_dir=str(private_data_dir),
            project_dir=str(ROOT),
            playbook=str(ROOT / "playbooks" / playbook),
            inventory=str(Path(inventory).resolve()),
            extravars=extravars,
            ident=ident,
            cmdline=" ".join(cmdline) or None,
            quiet=True,
            suppress_env_files=True,
            event_handler=event_handler,
            cancel_callback=cancel.is_set,
            settings={"suppress_ansible_output": True},
        )
        ours = {
            # Modules run with the controller's Python; ansible-runner also needs the venv's tools on PATH.
            # driver/bin first: its ansible-playbook hands the run its private variables (runenv.py).
            "PATH": os.pathsep.join((str(runenv.WRAPPER_DIR), venv_bin, os.environ.get("PATH", ""))),
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_FORCE_COLOR": "0",
            runenv.PYTHON: sys.executable,
            **guardian.env(),
        }
        env, private = runenv.for_run(runner.config.env, os.environ, ours, pass_env)
        outcome.environment = sorted(set(private) | (set(env) & set(os.environ)))
        with runenv.channel(private) as channel:
            # ansible-runner writes this environment to artifacts/<ident>/command: no credential in it.
            runner.config.env = {**env, runenv.CHANNEL: str(channel.path)}
            runner.run()
    finally:
        outcome.stopped = guardian.finished()
    outcome.status = runner.status
    outcome.rc = runner.rc if runner.rc is not None else 1
    return outcome
