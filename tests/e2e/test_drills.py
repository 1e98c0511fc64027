"""`drill`: a Molecule drill run phase by phase and timed into the history, and `drill report`."""

from __future__ import annotations

import json
import re
import stat

import pytest

from driver import drills

PHASES = ["prepare", "converge", "idempotence", "verify", "cleanup"]


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_drill_is_timed_into_the_history(target, tmp_path, monkeypatch, capsys):
    if target.status is None:
        pytest.skip("the drills run against the sandbox (their inventory links its group_vars)")
    for key, value in target.env.items():
        monkeypatch.setenv(key, value)
    history = tmp_path / "drills" / "h.jsonl"

    assert drills.main(["restart", "--history", str(history)]) == 0

    lines = history.read_text().splitlines()
    assert len(lines) == 1
    run = json.loads(lines[0])
    assert run["schema"] == "emergency-ops/drill/v1"
    assert (run["drill"], run["status"], run["failed_phase"]) == ("restart", "succeeded", None)
    seconds = {p["name"]: p["seconds"] for p in run["phases"]}
    assert [p["name"] for p in run["phases"] if p["name"] in PHASES] == PHASES
    assert all(p["ok"] and p["seconds"] >= 0 for p in run["phases"])
    assert run["rto_seconds"] > 0
    assert run["rto_seconds"] == pytest.approx(seconds["converge"] + seconds["verify"], abs=1)
    assert run["idempotence_seconds"] == seconds["idempotence"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", run["started_at"])
    assert run["started_at"] <= run["phases"][0]["started_at"] <= run["finished_at"]
    assert run["target_minutes"] is None or run["target_minutes"] > 0
    assert run["operator"] and run["host"]
    assert (mode(history), mode(history.parent)) == (0o600, 0o700)
    out = capsys.readouterr().out
    assert "restart: converge " in out and "restart: recovered in " in out


def test_an_unknown_drill_runs_nothing(tmp_path, monkeypatch, capsys):
    def ran(*args, **kwargs):
        raise AssertionError("a phase ran")

    monkeypatch.setattr(drills, "run_phase", ran)
    monkeypatch.setattr(drills, "drill_targets", ran)
    history = tmp_path / "h.jsonl"

    assert drills.main(["restart", "no-such-drill", "--history", str(history)]) == 2

    assert not history.exists()
    err = capsys.readouterr().err
    assert "no-such-drill" in err and "rollback" in err


def run_line(drill, day, status, rto, target, operator="ops"):
    phases = [("prepare", 9.0), ("converge", rto * 0.6 if rto else 4.0)]
    if status == "succeeded":
        phases += [("idempotence", 8.0), ("verify", rto * 0.4)]
    phases.append(("cleanup", 3.0))
    return {
        "schema": "emergency-ops/drill/v1",
        "drill": drill,
        "started_at": f"2026-11-{day:02d}T10:00:00.000Z",
        "finished_at": f"2026-11-{day:02d}T10:01:00.000Z",
        "status": status,
        "failed_phase": None if status == "succeeded" else "converge",
        "rto_seconds": rto if status == "succeeded" else None,
        "phases": [
            {"name": n, "started_at": f"2026-11-{day:02d}T10:00:00.000Z", "seconds": s, "ok": True}
            for n, s in phases
        ],
        "operator": operator,
        "host": "drill-host",
        "commit": "abc1234",
        "target_minutes": target,
    }


def test_the_report_draws_the_history(tmp_path, capsys):
    history = tmp_path / "h.jsonl"
    runs = [
        run_line("rollback", 1, "succeeded", 21.0, 15),
        run_line("restart", 1, "succeeded", 19.5, None),
        run_line("rollback", 2, "failed", None, 15),
        run_line("restart", 2, "succeeded", 18.0, 10, operator="<b>night & day</b>"),
        run_line("rollback", 3, "succeeded", 20.2, 15),
    ]
    history.write_text("".join(json.dumps(r) + "\n" for r in runs))
    out = tmp_path / "report"

    assert drills.main(["report", "--history", str(history), "--out", str(out)]) == 0

    svg, page = out / "drills.svg", out / "drills.html"
    assert (mode(svg), mode(page)) == (0o600, 0o600)
    assert svg.read_text().startswith("<svg")
    text = page.read_text()
    assert "<svg" in text
    assert not re.search(r"\bsrc\s*=", text)
    assert all(link.startswith("#") for link in re.findall(r"href\s*=\s*[\"']([^\"']*)", text))
    assert "<b>night" not in text and "&lt;b&gt;night &amp; day" in text  # every text escaped
    assert "rollback" in text and "restart" in text
    printed = capsys.readouterr().out
    assert str(svg) in printed and str(page) in printed


def test_the_report_needs_a_history(tmp_path):
    assert drills.main(["report", "--history", str(tmp_path / "none.jsonl"), "--out", str(tmp_path)]) == 2


def test_the_phases_follow_the_test_sequence():
    assert drills.phases_of("restart") == PHASES
    # destroy (a no-op with the unmanaged driver) left out, side_effect kept in its place.
    assert drills.phases_of("drain") == [
        "prepare",
        "converge",
        "idempotence",
        "side_effect",
        "verify",
        "cleanup",
    ]


def test_a_failed_phase_stops_the_drill_and_cleanup_still_runs(tmp_path, monkeypatch, capsys):
    ran = []

    def phase(name, phase, env):
        ran.append(phase)
        if phase == "converge" and name == "rollback":
            return False, "converge output\n"
        if phase == "converge":
            raise KeyboardInterrupt
        return True, ""

    monkeypatch.setattr(drills, "run_phase", phase)
    monkeypatch.setattr(drills, "drill_targets", lambda inventory: {"rollback": 15})
    history = tmp_path / "h.jsonl"

    assert drills.main(["rollback", "--history", str(history)]) == 1
    assert ran == ["prepare", "converge", "cleanup"]
    ran.clear()
    assert drills.main(["restart", "rollback", "--history", str(history)]) == 130  # Ctrl-C: no rollback
    assert ran == ["prepare", "converge", "cleanup"]

    first, second = (json.loads(line) for line in history.read_text().splitlines())
    assert (first["status"], first["failed_phase"], first["rto_seconds"]) == ("failed", "converge", None)
    assert first["target_minutes"] == 15
    assert [p["ok"] for p in first["phases"]] == [True, False, True]
    assert (second["drill"], second["status"], second["failed_phase"]) == ("restart", "failed", "converge")
    assert "converge output" in capsys.readouterr().out
