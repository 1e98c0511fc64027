"""``python -m driver``: list the procedures, run one, or manage the sandbox.

CLI arguments -> registry -> validation against the inventory -> ansible-runner -> events ->
result + incident record. Exit codes: 0 done, 1 failed, 2 invalid input (nothing ran),
3 refused (lock held, confirmation missing, target in a state the procedure will not touch),
4 a dependency unreachable in preflight (nothing changed).
"""

from __future__ import annotations

import argparse
import os
import sys

from driver import EXIT_INVALID, EXIT_OK, settings
from driver.procedure import Argument, Procedure
from driver.registry import PROCEDURES
from driver.validate import InputError


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
    from driver import desk_cli

    desk_cli.add_commands(commands)
    commands.add_parser(
        "watch",
        help="roll a service back on its own when Prometheus shows a trigger breached (watch --help)",
    )
    commands.add_parser(
        "drill",
        help="run drills with measured recovery times, or draw their history (drill NAME|all|report --help)",
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
    if argv[:1] == ["watch"]:  # a long-running loop with options of its own
        from driver import watch

        return watch.main(argv[1:])
    if argv[:1] == ["drill"]:  # the drill runner has options of its own
        from driver import drills

        return drills.main(argv[1:])
    if argv[:2] == ["evidence", "verify"]:
        argv = ["evidence-verify", *argv[2:]]
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return list_procedures()
        if args.command == "sandbox":
            from sandbox import cli as sandbox_cli

            return sandbox_cli.run(args.action, args.dir, args.json)
        if args.command in ("incident", "notify", "silence", "unsilence"):
            from driver import desk_cli

            return desk_cli.run(args)
        from driver.run import Run

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
