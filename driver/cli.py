"""``python -m driver``: list the procedures, run one, or manage the sandbox.

CLI arguments -> registry -> validation against the inventory -> ansible-runner -> events ->
result + incident record. Exit codes: 0 done, 1 failed, 2 invalid input (nothing ran),
3 refused (lock held, confirmation missing, target in a state the procedure will not touch),
4 a dependency unreachable in preflight (nothing changed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from driver import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    runenv,
    settings,
    validate,
)
from driver.incident import Incident, iso, make_private, new_id, scrub_recorded_environments, utcnow
from driver.procedure import Argument, Procedure
from driver.registry import PROCEDURES
from driver.results import Result, Step, from_stats
from driver.validate import InputError

# A preflight task of a module we do not own (amazon.aws, kubernetes.core, ...) that failed with one of
# these connection errors could not reach its dependency: exit 4, not "refused". Our own modules say so
# themselves with outcome=unreachable.
CONNECTION_FAILURES = re.compile(
    r"Could not connect to the endpoint URL|Failed to establish a new connection|Connection refused"
    r"|Name or service not known|No route to host|Connect timeout|Read timed out",
    re.IGNORECASE,
)

STATUS_FOR_EXIT = {
    EXIT_OK: "succeeded",
    EXIT_FAILED: "failed",
    EXIT_INVALID: "invalid",
    EXIT_REFUSED: "refused",
    EXIT_UNREACHABLE: "failed",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m driver",
        description="Emergency procedures: each one checks, records, changes, verifies and reports.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("list", help="list the procedures")
    sandbox = commands.add_parser("sandbox", help="start, stop or reset the local sandbox platform")
    sandbox.add_argument(
        "action",
        choices=["up", "down", "status", "reset", "traffic"],
        help="traffic: the bounded load generator (sandbox traffic --help)",
    )
    sandbox.add_argument("--json", action="store_true", help="print the endpoints as JSON")
    sandbox.add_argument(
        "--dir", default=None, help="state folder (default .sandbox, env EMERGENCY_SANDBOX_DIR)"
    )
    for procedure in PROCEDURES.values():
        sub = commands.add_parser(
            procedure.name,
            help=procedure.description,
            description=procedure.description,
            epilog="Runbooks: "
            + "; ".join(procedure.runbooks)
            + (". Destructive: needs --yes or the typed confirmation." if procedure.destructive else "."),
        )
        own = sub.add_argument_group(f"{procedure.name} arguments")
        for argument in procedure.arguments:
            add_option(own, procedure, argument)
        settings.add_arguments(sub)
    return parser


def add_option(group: argparse._ArgumentGroup, procedure: Procedure, argument: Argument) -> None:
    """A flag as the role's spec declares the option: its type, choices, default and description."""
    option = procedure.option(argument)
    notes = []
    if option.choices:
        notes.append("one of: " + ", ".join(map(str, option.choices)))
    if option.has_default and option.type != "bool":
        notes.append(f"default: {option.default}")
    if procedure.required(argument):
        notes.append("required")
    text = option.description + (f" ({'; '.join(notes)})" if notes else "")
    text = text.replace("%", "%%")  # argparse formats help with %
    if not argument.flag.startswith("-"):  # positional words, e.g. set-env's KEY=VALUE...
        group.add_argument(argument.var, nargs="*", metavar=argument.metavar, help=text)
    elif option.type == "bool":
        group.add_argument(argument.flag, dest=argument.var, action="store_true", help=text)
    elif option.type == "list":
        group.add_argument(
            argument.flag, dest=argument.var, action="append", metavar=argument.metavar, help=text
        )
    else:  # int, str, and a dict given as text that the procedure's check parses (cpu=1,memory=1Gi)
        kind = int if option.type == "int" else str
        group.add_argument(argument.flag, dest=argument.var, metavar=argument.metavar, type=kind, help=text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["sandbox", "traffic"]:  # the load generator has options of its own
        from sandbox import cli as sandbox_cli

        return sandbox_cli.traffic(argv[2:], os.environ.get("EMERGENCY_SANDBOX_DIR"))
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return list_procedures()
        if args.command == "sandbox":
            from sandbox import cli as sandbox_cli

            return sandbox_cli.run(args.action, args.dir, args.json)
        return Run(PROCEDURES[args.command], args).execute()
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID


def list_procedures() -> int:
    width = max(len(name) for name in PROCEDURES)
    for procedure in PROCEDURES.values():
        mark = " (destructive)" if procedure.destructive else ""
        print(f"{procedure.name:<{width}}  {procedure.description}{mark}")
    return EXIT_OK


class Run:
    """One run of one procedure, from validated input to the written result."""

    def __init__(self, procedure: Procedure, args: argparse.Namespace):
        self.procedure = procedure
        self.args = args
        self.values, self.sources = settings.resolve(args)
        self.cancel = threading.Event()

    # -- input -----------------------------------------------------------------------------------
    def inputs(self) -> dict[str, Any]:
        return {a.flag.lstrip("-"): getattr(self.args, a.var) for a in self.procedure.arguments}

    def validate(self) -> tuple[Incident, dict[str, Any]]:
        from driver import inventory

        values = self.values
        base = Path(values["incidents_dir"])
        incident_id = validate.incident_id(values["incident"]) if values["incident"] else new_id(base)
        validate.free_text(values["reason"], "--reason")
        validate.positive(values["timeout"], "--timeout", maximum=86400)
        validate.env_names(runenv.parse_names(values["pass_env"]), "--pass-env")
        self.platform = inventory.load(values["inventory"])
        given = [
            a.flag for a in self.procedure.arguments if getattr(self.args, a.var) not in (None, False, [])
        ]
        if self.procedure.one_of and len(set(given) & set(self.procedure.one_of)) != 1:
            raise InputError(
                f"{self.procedure.name}: give exactly one of {' or '.join(self.procedure.one_of)}"
            )
        extravars: dict[str, Any] = {}
        for argument in self.procedure.arguments:
            value = getattr(self.args, argument.var)
            self.check_option(argument, value)
            if value is not None:
                extravars[argument.var] = value
        if self.procedure.check:  # the procedure's own checks; it may normalise values (KEY=VALUE -> map)
            self.procedure.check(extravars, self.platform)
        if self.procedure.force_var:
            extravars[self.procedure.force_var] = bool(values["force"])
        if self.procedure.timeout_var:
            extravars[self.procedure.timeout_var] = values["timeout"]
        return Incident(base, incident_id), extravars

    def check_option(self, argument: Argument, value: Any) -> None:
        """What the spec requires of one option, and the inventory's names for those that name one."""
        procedure, option = self.procedure, self.procedure.option(argument)
        label = argument.flag if argument.flag.startswith("-") else (argument.metavar or argument.var)
        if procedure.required(argument) and value in (None, False, []):
            raise InputError(f"{procedure.name}: {label} is required")
        values = value if isinstance(value, list) else [] if value is None else [value]
        if option.choices and option.type != "bool":
            for item in values:
                if item not in option.choices:
                    valid = ", ".join(map(str, option.choices))
                    raise InputError(f"{procedure.name}: {label} {str(item)[:40]!r} is not one of: {valid}")
        if argument.names:
            for name in values:
                validate.dns_label(name, "service", self.platform.all_service_names)
        if argument.names == "deployment":
            others = [n for n in values if n not in self.platform.deployment_names]
            if others:
                raise InputError(f"only Deployments keep revisions to roll back to; not: {', '.join(others)}")

    def confirm(self) -> bool:
        """Destructive procedures need --yes or the target's name typed at a prompt."""
        if not self.procedure.destructive or self.values["yes"] or self.values["check"]:
            return True
        if not sys.stdin.isatty():
            return False
        target = self.platform.namespace
        answer = input(f"{self.procedure.name} is destructive. Type the namespace '{target}' to go on: ")
        return answer.strip() == target

    # -- run -------------------------------------------------------------------------------------
    def execute(self) -> int:
        started = utcnow()
        incident, extravars = self.validate()
        values = self.values
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
        extravars.update(
            incident_id=incident.id,
            incident_severity=values["severity"],
            incident_operator=values["operator"],
            lock_held_by_driver=True,
        )
        self.say(
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
                on_step=self.print_step,
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
        result.run = {
            "ident": ident,
            "artifacts": str(incident.run_dir(ident)),
            "runner_status": outcome.status,
            # The operator's variables the run was given, by name only (driver/runenv.py).
            "environment": outcome.environment,
        }
        code = self.classify(outcome, result)
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

    def classify(self, outcome, result: Result) -> int:
        if outcome.status == "successful":
            return EXIT_OK
        if outcome.status == "canceled" or self.cancel.is_set():
            stopped = (
                f"; stopped {len(outcome.stopped)} process(es) it had started" if outcome.stopped else ""
            )
            result.errors.append(
                {"kind": "cancelled", "message": f"cancelled by the operator or a signal{stopped}"}
            )
            return EXIT_FAILED
        if not outcome.failures:
            result.errors.append({"kind": "failed", "message": f"ansible-runner finished {outcome.status}"})
            return EXIT_FAILED
        first = outcome.failures[0]
        step: Step = first["step"]
        kind = first["res"].get("outcome")
        if first["unreachable"]:
            kind = "unreachable"
        elif not kind and "| Preflight |" in step.name:
            kind = "unreachable" if CONNECTION_FAILURES.search(step.message or "") else "refused"
        elif not kind:
            kind = "failed"
        for failure in outcome.failures:
            result.errors.append(
                {
                    "kind": kind if failure is first else "failed",
                    "step": failure["step"].name,
                    "host": failure["step"].host,
                    "message": failure["step"].message,
                }
            )
        if kind == "unreachable" and not result.changed:
            return EXIT_UNREACHABLE
        return {"invalid": EXIT_INVALID, "refused": EXIT_REFUSED}.get(kind, EXIT_FAILED)

    def finish(self, incident: Incident, ident: str | None, result: Result, code: int, started) -> int:
        finished = utcnow()
        result.exit_code = code
        result.status = STATUS_FOR_EXIT[code]
        result.finished_at = iso(finished)
        result.duration_seconds = round((finished - started).total_seconds(), 3)
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
            self.summary(result, path)
        return code

    # -- output ----------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        if not self.values["json"]:
            print(text, flush=True)

    def print_step(self, step: Step) -> None:
        if self.values["json"]:
            return
        line = f"  {step.status:<11} {step.name}  [{step.host}]  {step.duration:.1f}s"
        print(line, flush=True)
        if step.message and step.status in ("failed", "unreachable"):
            print(f"              {step.message}", flush=True)

    def summary(self, result: Result, path: Path) -> None:
        changed = f"{'would change' if result.check_mode else 'changed'}={str(result.changed).lower()}"
        mode = " (check mode: nothing was changed)" if result.check_mode else ""
        print(
            f"{result.status.upper()} {result.procedure}{mode}: {changed} "
            f"in {result.duration_seconds:.1f}s (exit {result.exit_code})"
        )
        if self.procedure.summarize:
            for line in self.procedure.summarize(result.outputs):
                print(f"  {line}")
        else:
            for key, value in result.outputs.items():
                print(f"  {key}: {json.dumps(value, default=str)}")
        for error in result.errors:
            where = f" at '{error['step']}'" if error.get("step") else ""
            print(f"  {error['kind']}{where}: {error.get('message', '')}", file=sys.stderr)
        print(f"  result: {path}")

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
