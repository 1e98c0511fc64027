"""What every benchmark shares: a sandbox of its own, timing of whole commands, medians."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from driver import ROOT
from sandbox.platform import Sandbox


@contextlib.contextmanager
def sandbox(**env: str) -> Iterator[tuple[Sandbox, dict]]:
    """A fresh sandbox in a folder of its own, stopped and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="emergency-bench-", dir="/tmp"))
    os.environ.update({"EMERGENCY_SANDBOX_DIR": str(folder), **env})
    box = Sandbox(folder)
    try:
        yield box, box.up()
    finally:
        box.destroy()


def timed(argv: list[str] | str, env: dict | None = None, shell: bool = False) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        argv,
        shell=shell,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        tail = f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        sys.exit(f"benchmark command failed ({proc.returncode}): {argv}\n{tail}")
    return elapsed


def median(values: list[float]) -> float:
    return statistics.median(values)
