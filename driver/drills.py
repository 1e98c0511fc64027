"""``python -m driver drill NAME...|all`` and ``python -m driver drill report``: the Molecule drills
(molecule/<name>/) run phase by phase, each phase timed, every run appended to the drill history.

A drill's recovery time (RTO) runs from the end of prepare (the fault is in place) to the end of
verify (the platform is verified healthy), the idempotence re-run taken out: what an operator would
spend running the procedure and checking the platform. The history (drills/history.jsonl, one JSON
line a run, schema emergency-ops/drill/v1) is what ``drill report`` draws, against the targets of
``platform_incident.drill_targets`` in the sandbox inventory.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import html
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from driver import EXIT_FAILED, EXIT_INVALID, EXIT_OK, ROOT
from driver.incident import iso, utcnow

SCHEMA = "emergency-ops/drill/v1"
SCENARIOS = ROOT / "molecule"
DEFAULT_HISTORY = ROOT / "drills" / "history.jsonl"
DEFAULT_REPORT = ROOT / "drills" / "report"
DEFAULT_INVENTORY = str(ROOT / "inventories" / "sandbox")
NO_OPS = {"dependency", "create", "destroy"}  # nothing to do with the unmanaged driver
PHASE_TIMEOUT = 1800  # seconds; a phase still running then is stopped and the drill fails


def main(argv: list[str]) -> int:
    if argv[:1] == ["report"]:
        parser = argparse.ArgumentParser(
            prog="python -m driver drill report", description="Draw the drill history: RTO per drill."
        )
        add_history(parser)
        parser.add_argument(
            "--out", default=str(DEFAULT_REPORT), metavar="DIR", help="default drills/report/"
        )
        args = parser.parse_args(argv[1:])
        return report(history_path(args.history), Path(args.out))
    parser = argparse.ArgumentParser(
        prog="python -m driver drill",
        description="Run Molecule drills phase by phase and record their recovery times.",
        epilog="`python -m driver drill report [--history PATH] [--out DIR]` draws the history.",
    )
    parser.add_argument("names", nargs="+", metavar="NAME", help="a scenario of molecule/, or all")
    add_history(parser)
    parser.add_argument("--inventory", default=DEFAULT_INVENTORY, metavar="PATH", help="for drill_targets")
    args = parser.parse_args(argv)
    known = scenarios()
    names = known if args.names == ["all"] else args.names
    unknown = [name for name in names if name not in known]
    if unknown:
        print(f"error: no drill {', '.join(unknown)}; drills: {', '.join(known)} (or all)", file=sys.stderr)
        return EXIT_INVALID
    targets = drill_targets(args.inventory)
    history = history_path(args.history)
    failed = []
    for name in names:
        try:
            ok = run_drill(name, targets.get(name), history)["ok"]
        except KeyboardInterrupt:  # the drill was cleaned up and recorded as failed; stop there
            print(f"drills: interrupted in {name}", file=sys.stderr)
            return 130
        if not ok:
            failed.append(name)
    if failed:
        print(f"drills: {len(failed)} of {len(names)} failed: {', '.join(failed)}")
        return EXIT_FAILED
    print(f"drills: all {len(names)} passed; history {history}")
    return EXIT_OK


def add_history(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--history", metavar="PATH", help="default drills/history.jsonl, env EMERGENCY_DRILL_HISTORY"
    )


def history_path(option: str | None) -> Path:
    return Path(option or os.environ.get("EMERGENCY_DRILL_HISTORY") or DEFAULT_HISTORY)


def scenarios() -> list[str]:
    return sorted(p.parent.name for p in SCENARIOS.glob("*/molecule.yml"))


def phases_of(name: str) -> list[str]:
    """The scenario's test_sequence without the no-ops, prepare first and cleanup last (both run
    even when the scenario has no playbook for them: molecule then says so and moves on)."""
    config = yaml.safe_load((SCENARIOS / name / "molecule.yml").read_text()) or {}
    sequence = (config.get("scenario") or {}).get("test_sequence") or [
        "converge",
        "idempotence",
        "side_effect",
        "verify",
    ]
    middle = [p for p in sequence if p not in NO_OPS | {"prepare", "cleanup"}]
    return ["prepare", *dict.fromkeys(middle), "cleanup"]


def drill_targets(inventory: str) -> dict[str, int | float]:
    """Minutes per drill from platform_incident.drill_targets; none when the inventory cannot be read
    or templated (it reads the sandbox's endpoints file)."""
    try:
        from driver.inventory import load

        found = (load(inventory).templated("platform_incident") or {}).get("drill_targets") or {}
    except Exception as exc:  # any failure of Ansible's loader or templating: run without targets
        print(f"warning: no drill targets ({inventory}: {exc})", file=sys.stderr)
        return {}
    targets = {}
    for name, minutes in dict(found).items():
        if isinstance(minutes, int | float) and not isinstance(minutes, bool) and minutes > 0:
            targets[str(name)] = minutes
        else:
            print(f"warning: drill target of {name} is not a number of minutes: {minutes!r}", file=sys.stderr)
    return targets


def molecule_env(ephemeral: str) -> dict[str, str]:
    """As scripts/drills.sh runs molecule: .venv's tools first on PATH, no colours. Each drill has its
    own ephemeral folder, so it starts from no molecule state (prepare runs) and meets no other run's."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "NO_COLOR": "1",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "MOLECULE_EPHEMERAL_DIRECTORY": ephemeral,
    }


def molecule() -> str:
    beside = Path(sys.executable).parent / "molecule"
    return str(beside) if beside.exists() else shutil.which("molecule") or "molecule"


def run_phase(name: str, phase: str, env: dict[str, str]) -> tuple[bool, str]:
    """``molecule <phase> -s NAME`` from the repository root: (ok, its output)."""
    argv = [molecule(), phase.replace("_", "-"), "-s", name]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so that a timeout or Ctrl-C stops the playbook it runs too
    )
    try:
        output, _ = proc.communicate(timeout=PHASE_TIMEOUT)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        return False, output + f"\n{phase} stopped after {PHASE_TIMEOUT} s\n"
    return proc.returncode == 0, output


def run_drill(name: str, target: float | None, history: Path) -> dict[str, Any]:
    """Runs the drill's phases until one fails, then cleanup; appends the run to the history.
    Interrupted (Ctrl-C), the phase counts as failed, cleanup runs and KeyboardInterrupt goes on."""
    started_at, phases, failed, ends, interrupted = utcnow(), [], None, {}, False
    ephemeral = tempfile.mkdtemp(prefix=f"emergency-molecule-{name}-")
    env = molecule_env(ephemeral)
    try:
        for phase in phases_of(name):
            if failed and phase != "cleanup":
                continue
            phase_started_at, start = utcnow(), time.monotonic()
            try:
                ok, output = run_phase(name, phase, env)
            except KeyboardInterrupt:
                ok, output, interrupted = False, f"{phase} interrupted", True
            ends[phase] = time.monotonic()
            seconds = ends[phase] - start
            phases.append(
                {"name": phase, "started_at": iso(phase_started_at), "seconds": round(seconds, 3), "ok": ok}
            )
            print(f"{name}: {phase} {seconds:.1f} s{'' if ok else ' FAILED'}", flush=True)
            if not ok:
                sys.stdout.write(output if output.endswith("\n") else output + "\n")
                failed = failed or phase
    finally:
        shutil.rmtree(ephemeral, ignore_errors=True)
    rto = None
    if not failed and "verify" in ends:
        idempotence = sum(p["seconds"] for p in phases if p["name"] == "idempotence")
        rto = round(ends["verify"] - ends["prepare"] - idempotence, 3)
    record = {
        "schema": SCHEMA,
        "drill": name,
        "started_at": iso(started_at),
        "finished_at": iso(utcnow()),
        "status": "failed" if failed else "succeeded",
        "failed_phase": failed,
        "rto_seconds": rto,
        "idempotence_seconds": next((p["seconds"] for p in phases if p["name"] == "idempotence"), None),
        "phases": phases,
        "operator": operator(),
        "host": socket.gethostname(),
        "commit": git_commit(),
        "target_minutes": target,
    }
    append(history, record)
    goal = f"target {minutes(target)} min" if target else "no target"
    if failed:
        print(f"{name}: FAILED at {failed} ({goal})", flush=True)
    else:
        missed = ": MISSED" if target and rto is not None and rto > target * 60 else ""
        print(f"{name}: recovered in {duration(rto)} ({goal}{missed})", flush=True)
    if interrupted:
        raise KeyboardInterrupt
    return {**record, "ok": not failed}


def operator() -> str:
    try:
        return os.environ.get("EMERGENCY_OPERATOR") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def git_commit() -> str | None:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.strip() if proc.returncode == 0 else ""
    return commit or None


def private_folder(folder: Path) -> None:
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
        folder.chmod(0o700)


def append(history: Path, record: dict[str, Any]) -> None:
    """One line, appended (O_APPEND), to a 0600 file in a 0700 folder when this creates them."""
    private_folder(history.parent)
    fd = os.open(history, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, 0o600)
        f.write(text)


def minutes(value: float) -> str:
    return f"{value:g}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def read_history(path: Path) -> list[dict[str, Any]]:
    runs = []
    if not path.exists():
        return runs
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            run = json.loads(line)
        except json.JSONDecodeError:
            run = None
        if (
            isinstance(run, dict)
            and run.get("schema") == SCHEMA
            and run.get("drill")
            and run.get("started_at")
        ):
            runs.append(run)
        elif line.strip():
            print(f"warning: {path}:{number} is not a drill run, left out", file=sys.stderr)
    return sorted(runs, key=lambda r: r["started_at"])


def when(run: dict[str, Any]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(run["started_at"].replace("Z", "+00:00"))


def shown(stamp: str) -> str:
    """2026-12-04T03:18:07.197Z -> 2026-12-04 03:18:07 UTC"""
    return stamp.replace("T", " ")[:19] + " UTC"


def time_to_failure(run: dict[str, Any]) -> float:
    """How long a failed run's recovery went on before it failed (what its marker shows)."""
    return sum(
        p["seconds"] for p in run.get("phases", []) if p["name"] not in ("prepare", "idempotence", "cleanup")
    )


def chart(by_drill: dict[str, list[dict[str, Any]]]) -> str:
    """The SVG: RTO in minutes per drill over time, its target dashed in the same colour."""
    import matplotlib
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    figure = Figure(figsize=(11, 5.5), layout="constrained")
    axes = figure.add_subplot()
    tab20 = matplotlib.colormaps["tab20"]
    colours = [tab20(i) for i in (*range(0, 20, 2), *range(1, 20, 2))]  # the ten dark hues first
    for i, (name, runs) in enumerate(by_drill.items()):
        colour = colours[i % len(colours)]
        done = [r for r in runs if r.get("status") == "succeeded" and r.get("rto_seconds") is not None]
        axes.plot(
            [when(r) for r in done],
            [r["rto_seconds"] / 60 for r in done],
            "o-",
            color=colour,
            label=name,
            ms=5,
        )
        bad = [r for r in runs if r.get("status") != "succeeded"]
        axes.plot(
            [when(r) for r in bad],
            [max(time_to_failure(r), 1.0) / 60 for r in bad],
            "X",
            color=colour,
            ms=11,
            mec="#c00000",
            mew=1.5,
            ls="none",
        )
        target = runs[-1].get("target_minutes")
        if target:
            axes.axhline(target, color=colour, ls="--", lw=1.5)
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_ylabel("recovery time, minutes (log scale)")
    axes.set_title("Drill recovery time (RTO) per run; dashed: the drill's target")
    axes.grid(True, which="both", alpha=0.3)
    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes.set_xlabel("drill started (UTC)")
    handles, labels = axes.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="grey", ls="--"),
        Line2D([], [], marker="X", color="grey", mec="#c00000", ls="none", ms=10),
    ]
    labels += ["target", "failed (time to failure)"]
    axes.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    buffer = io.StringIO()
    figure.savefig(
        buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None}
    )
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def drill_table(name: str, runs: list[dict[str, Any]]) -> str:
    last = runs[-1]
    rtos = [r["rto_seconds"] for r in runs if r.get("rto_seconds") is not None]
    target = last.get("target_minutes")
    failed = sum(r.get("status") != "succeeded" for r in runs)
    if last.get("rto_seconds") is None:
        met = "no: the last run failed" if last.get("status") != "succeeded" else "-"
    elif not target:
        met = "no target"
    else:
        met = "yes" if last["rto_seconds"] <= target * 60 else "no"
    status = last.get("status", "?") + (f" at {last['failed_phase']}" if last.get("failed_phase") else "")
    rows = [
        ("Last run", f"{shown(last['started_at'])}: {status}"),
        ("Commit, by", f"{last.get('commit') or '-'}, {last.get('operator', '?')}@{last.get('host', '?')}"),
        ("Last RTO", duration(last.get("rto_seconds"))),
        (
            "Best / worst RTO",
            f"{duration(min(rtos, default=None))} / {duration(max(rtos, default=None))}"
            f" ({len(runs)} run{'s' if len(runs) > 1 else ''}, {failed} failed)",
        ),
        ("Target", f"{minutes(target)} min" if target else "none"),
        ("Target met", met),
    ]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    phases = "".join(
        f'<tr class="{"ok" if p.get("ok") else "bad"}"><td>{html.escape(str(p.get("name")))}</td>'
        f"<td>{p.get('seconds', 0):.1f} s</td><td>{'ok' if p.get('ok') else 'FAILED'}</td></tr>"
        for p in last.get("phases", [])
    )
    css = "bad" if last.get("status") != "succeeded" or met == "no" else "ok"
    return (
        f'<section><h2 class="{css}">{html.escape(name)}</h2><table>{body}'
        f'<tr><th>Phases of the last run</th><td><table class="phases">{phases}</table></td></tr>'
        "</table></section>"
    )


STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
svg { max-width: 100%; height: auto; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(34em, 1fr)); gap: 0.5em 2em; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 0.2em 0.6em; border-bottom: 1px solid #ddd; vertical-align: top; }
table.phases td { border: none; padding: 0 0.6em 0 0; }
h2 { font-size: 1.1em; margin-bottom: 0.3em; }
.ok { color: #1a6e1a; } .bad { color: #b00000; }
"""


def report(history: Path, out: Path) -> int:
    runs = read_history(history)
    if not runs:
        print(f"error: no drill runs in {history}", file=sys.stderr)
        return EXIT_INVALID
    by_drill: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(runs, key=lambda r: r["drill"]):
        by_drill.setdefault(run["drill"], []).append(run)
    svg = chart(by_drill)
    intro = (
        f"{len(runs)} runs of {len(by_drill)} drills from {history}, "
        f"the last one {shown(runs[-1]['started_at'])}. "
        "RTO: from the end of prepare (the fault injected) to the end of verify (the platform verified "
        "healthy), without the idempotence re-run."
    )
    tables = "".join(drill_table(name, drill_runs) for name, drill_runs in by_drill.items())
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Drill recovery times</title>'
        f"<style>{STYLE}</style></head><body><h1>Drill recovery times</h1>"
        f"<p>{html.escape(intro)}</p>{svg}<main>{tables}</main></body></html>\n"
    )
    private_folder(out)
    write_private(out / "drills.svg", svg)
    write_private(out / "drills.html", page)
    print(out / "drills.svg")
    print(out / "drills.html")
    return EXIT_OK
