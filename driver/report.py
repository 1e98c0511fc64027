"""What the operator reads while a procedure runs and when it ends (nothing with --json but the result)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from driver.procedure import Procedure
from driver.results import Result, Step


class Report:
    def __init__(self, procedure: Procedure, as_json: bool):
        self.procedure, self.as_json = procedure, as_json

    def say(self, text: str) -> None:
        if not self.as_json:
            print(text, flush=True)

    def print_step(self, step: Step) -> None:
        if self.as_json:
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
