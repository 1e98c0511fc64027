"""The incident's folder: its results, its timeline, and the runner artifacts of each run.

    incidents/INC-20261122-093112/
        timeline.jsonl            one JSON object per line, appended, never rewritten
        results/003-restart.json  the versioned result of each run
        runs/003-restart/         ansible-runner's private data dir (events, stdout)

Everything is created with mode 0600/0700: results can name hosts and services, and the folder is
the incident's evidence. It never holds a credential: see ``driver/runenv.py`` for the run's
environment, and ``scrub_recorded_environments`` for folders written before that was so.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def iso(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id(base: Path, now: datetime.datetime | None = None) -> str:
    """``INC-YYYYMMDD-HHMMSS``; a suffix keeps two incidents opened in the same second apart."""
    stem = (now or utcnow()).strftime("INC-%Y%m%d-%H%M%S")
    candidate, n = stem, 1
    while (base / candidate).exists():
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


class Incident:
    def __init__(self, base: Path, incident_id: str):
        self.id = incident_id
        self.folder = base / incident_id

    def ensure(self) -> None:
        os.makedirs(self.folder / "results", mode=0o700, exist_ok=True)
        os.makedirs(self.folder / "runs", mode=0o700, exist_ok=True)

    def next_run(self, procedure: str) -> str:
        """A fixed ident per run: a sequence number within the incident plus the procedure."""
        self.ensure()
        existing = [p.name for p in (self.folder / "runs").iterdir()]
        number = 1 + max((int(name.split("-", 1)[0]) for name in existing if name[:3].isdigit()), default=0)
        ident = f"{number:03d}-{procedure}"
        os.makedirs(self.folder / "runs" / ident, mode=0o700)
        return ident

    def run_dir(self, ident: str) -> Path:
        return self.folder / "runs" / ident

    def write_result(self, ident: str, result: dict[str, Any]) -> Path:
        self.ensure()
        path = self.folder / "results" / f"{ident}.json"
        _write_private(path, json.dumps(result, indent=2, sort_keys=False) + "\n", append=False)
        return path

    def append_timeline(self, entry: dict[str, Any]) -> None:
        self.ensure()
        _write_private(self.folder / "timeline.jsonl", json.dumps(entry, sort_keys=False) + "\n", append=True)

    def timeline(self) -> list[dict[str, Any]]:
        path = self.folder / "timeline.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


RECORDED_ENV_SCRUBBED = "env_scrubbed"


def scrub_recorded_environments(base: Path) -> list[Path]:
    """Removes the environment values that earlier versions of the driver let ansible-runner record in
    ``runs/*/artifacts/*/command`` (the operator's whole environment, credentials included), under every
    incident folder of ``base``. The variable names, the command line and the working directory are
    kept. Returns the files it rewrote; a file already clean is not touched."""
    from driver.runenv import CHANNEL

    rewritten = []
    for path in sorted(base.glob("*/runs/*/artifacts/*/command")):
        try:
            raw = path.read_bytes()
            if CHANNEL.encode() in raw or RECORDED_ENV_SCRUBBED.encode() in raw:
                continue  # written by this version, or scrubbed already
            recorded = json.loads(raw)
        except (OSError, ValueError):
            continue
        if not isinstance(recorded, dict) or not recorded.get("env"):
            continue
        recorded["env"] = dict.fromkeys(recorded["env"])  # names only
        recorded[RECORDED_ENV_SCRUBBED] = iso(utcnow())
        fresh = path.with_name(path.name + ".scrubbed")
        _write_private(fresh, json.dumps(recorded), append=False)
        os.replace(fresh, path)  # the old text is never half-overwritten
        rewritten.append(path)
    return rewritten


def make_private(folder: Path) -> None:
    """ansible-runner creates some of its artifacts 0644/0755; the incident's folder keeps 0600/0700."""
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            os.chmod(os.path.join(root, name), 0o600)


def _write_private(path: Path, text: str, append: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "a" if append else "w") as handle:
        handle.write(text)
