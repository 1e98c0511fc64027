"""One run of one procedure: input checked, confirmation, the namespace locks, the playbook through
ansible-runner with signals turned into a clean cancel, then the result and the incident's timeline."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from driver import EXIT_REFUSED, EXIT_UNREACHABLE, runenv
from driver.incident import Incident, iso, make_private, scrub_recorded_environments, utcnow
from driver.inputs import Inputs
from driver.outcome import STATUS_FOR_EXIT, classify
from driver.procedure import Procedure
from driver.report import Report
from driver.results import Result, from_stats


class Run(Inputs):
    """From validated input to the written result."""

    def __init__(self, procedure: Procedure, args: argparse.Namespace):
        super().__init__(procedure, args)
        self.cancel = threading.Event()
        self.report = Report(procedure, bool(self.values["json"]))

    # -- run -------------------------------------------------------------------------------------
    def execute(self) -> int:
        from driver.desk import RunRecorder, import_wire_formats

        import_wire_formats()  # before the inventory's templating sets up Ansible's collection loader
        started = utcnow()
        incident, extravars = self.validate()
        values = self.values
        self.recorder = RunRecorder(
            self.platform,
            values["operator"],
            incident.folder.parent,
            incident.id,
            self.procedure,
            bool(values["check"]),
        )
        result = Result(
            procedure=self.procedure.name,
            incident={
                "id": incident.id,
                "severity": values["severity"],
                "reason": values["reason"],
                "operator": values["operator"],
            },
            inputs=self.inputs(),
            settings={name: {"value": values[name], "source": self.sources[name]} for name in values},
            check_mode=bool(values["check"]),
            started_at=iso(started),
        )
        if not self.confirm():
            result.errors.append(
                {"kind": "refused", "message": "confirmation missing: pass --yes or run at a terminal"}
            )
            return self.finish(incident, None, result, EXIT_REFUSED, started)

        from driver.lock import LockRefused, LockUnreachable

        try:
            keeper = self._take_locks(incident.id, result.check_mode)
        except LockRefused as exc:
            result.errors.append({"kind": "refused", "message": str(exc)})
            return self.finish(incident, None, result, EXIT_REFUSED, started)
        except LockUnreachable as exc:
            result.errors.append({"kind": "unreachable", "message": str(exc)})
            return self.finish(incident, None, result, EXIT_UNREACHABLE, started)
        self._scrub_earlier_runs(incident, result)
        ident = incident.next_run(self.procedure.name)
        incident.append_timeline(
            {
                "at": iso(started),
                "event": "started",
                "procedure": self.procedure.name,
                "run": ident,
                "operator": values["operator"],
                "check_mode": result.check_mode,
                "inputs": result.inputs,
                "reason": values["reason"],
            }
        )
        self.recorder.started(ident, result.inputs, values["reason"])
        extravars.update(
            incident_id=incident.id,
            incident_severity=values["severity"],
            incident_operator=values["operator"],
            incident_dir=str(incident.folder.resolve()),
            lock_held_by_driver=True,
        )
        self.report.say(
            f"{self.procedure.name} · incident {incident.id} · {self.platform.namespace}"
            f"{' · check mode (nothing will change)' if result.check_mode else ''}"
        )
        # Ctrl-C, a closed terminal or SSH session (SIGHUP) and SIGTERM all cancel the run cleanly: the
        # playbook is stopped, the processes it started are stopped, the lock is released, the result
        # written. (SIGKILL cannot be caught: driver/reaper.py's guardian stops the processes then.)
        cancels = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {sig: signal.signal(sig, lambda *_: self.cancel.set()) for sig in cancels}
        try:
            from driver.runner import run_playbook

            outcome = run_playbook(
                playbook=self.procedure.playbook,
                inventory=values["inventory"],
                extravars=extravars,
                private_data_dir=incident.run_dir(ident),
                ident=ident,
                check=result.check_mode,
                verbose=values["verbose"],
                on_step=self.report.print_step,
                cancel=self.cancel,
                pass_env=runenv.parse_names(values["pass_env"]),
            )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if keeper:
                keeper.stop()
        make_private(incident.run_dir(ident))
        result.steps = outcome.steps
        result.changed = any(step.changed for step in outcome.steps)
        result.outputs, result.prior_state = from_stats(outcome.stats)
        # What a role asks to put on the incident's timeline (an evidence bundle's manifest hash).
        for entry in result.outputs.pop("timeline", None) or []:
            incident.append_timeline({"at": iso(utcnow()), **entry, "run": ident})
            if entry.get("event") == "evidence":
                self.recorder.evidence({**entry, "run": ident})
        result.run = {
            "ident": ident,
            "artifacts": str(incident.run_dir(ident)),
            "runner_status": outcome.status,
            # The operator's variables the run was given, by name only (driver/runenv.py).
            "environment": outcome.environment,
        }
        code = classify(outcome, result, self.cancel.is_set())
        return self.finish(incident, ident, result, code, started)

    def _scrub_earlier_runs(self, incident: Incident, result: Result) -> None:
        """Runs recorded by earlier versions of the driver hold the operator's environment in clear:
        remove the values (once), and say which files were rewritten."""
        rewritten = scrub_recorded_environments(incident.folder.parent)
        if not rewritten:
            return
        warning = (
            f"removed the environment values that earlier runs had recorded (they may have held "
            f"credentials; rotate any that were exported) from {len(rewritten)} file(s): "
            + ", ".join(str(p) for p in rewritten[:20])
            + (" ..." if len(rewritten) > 20 else "")
        )
        result.warnings.append(warning)
        print(f"warning: {warning}", file=sys.stderr)
        # Each incident whose evidence was rewritten says so on its own timeline.
        base = incident.folder.parent
        for name in sorted({p.relative_to(base).parts[0] for p in rewritten}):
            Incident(base, name).append_timeline(
                {
                    "at": iso(utcnow()),
                    "event": "scrubbed",
                    "by_run_of": incident.id,
                    "files": [
                        str(p.relative_to(base / name)) for p in rewritten if p.is_relative_to(base / name)
                    ],
                }
            )

    def finish(self, incident: Incident, ident: str | None, result: Result, code: int, started) -> int:
        finished = utcnow()
        result.exit_code = code
        result.status = STATUS_FOR_EXIT[code]
        result.finished_at = iso(finished)
        result.duration_seconds = round((finished - started).total_seconds(), 3)
        # The shared record (and the channels told of procedures) learn how it ended; never fatal.
        result.warnings += self.recorder.finished(ident, result.to_dict(), self.services())
        data = result.to_dict()
        path = incident.write_result(ident or f"not-run-{int(time.time())}-{self.procedure.name}", data)
        incident.append_timeline(
            {
                "at": result.finished_at,
                "event": "finished",
                "procedure": self.procedure.name,
                "run": ident,
                "status": result.status,
                "exit_code": code,
                "changed": result.changed,
                "errors": [e.get("message", "")[:200] for e in result.errors],
            }
        )
        if self.values["json"]:
            print(json.dumps(data, indent=2))
        else:
            self.report.summary(result, path)
        return code

    def services(self) -> list[str]:
        """The services the run was given, for the incident record."""
        named = []
        for argument in self.procedure.arguments:
            if argument.names:
                value = getattr(self.args, argument.var)
                named += value if isinstance(value, list) else [value] if value else []
        return list(dict.fromkeys(named))

    def _take_locks(self, holder: str, check: bool):
        """Takes the lock of every namespace the inventory targets (in check mode: checks them), or
        raises LockRefused / LockUnreachable having released any it took."""
        from driver.lock import LeaseKeeper, LeaseKeepers, LockUnreachable, take

        keepers: list[LeaseKeeper] = []
        try:
            for host, namespace in dict.fromkeys(self.platform.namespaces):  # one lock per namespace
                platform = self.platform.for_host(host)
                try:
                    kubeconfig = platform.templated("platform_kubeconfig")
                    context = platform.templated("platform_context")
                except Exception as exc:
                    raise LockUnreachable(f"host {host}: cannot resolve its kubeconfig: {exc}") from exc
                take(kubeconfig, context, namespace, holder, check)
                if not check:
                    keepers.append(LeaseKeeper(kubeconfig, context, namespace, holder))
        except Exception:
            LeaseKeepers(keepers).stop(release=True)
            raise
        return LeaseKeepers(keepers).start() if keepers else None
