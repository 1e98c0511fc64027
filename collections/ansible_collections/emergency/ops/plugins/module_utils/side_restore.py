# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""What db_restore and pg_pitr share. Both put a side database beside the live one (from a backup in the
store, or from a pgBackRest point-in-time recovery) and verify it; then quiesce the writers, swap the side
database in by rename, keeping the live one, and bring the writers back. Every exit reports how far the
run got, which the restore role reads to decide whether to bring the writers back itself. Their shared options
are SIDE_RESTORE_ARGS of args_common.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure
from ansible_collections.emergency.ops.plugins.module_utils.kube import KubeError
from ansible_collections.emergency.ops.plugins.module_utils.postgres import allow_connections, databases
from ansible_collections.emergency.ops.plugins.module_utils.quiesce import NotSettled, scale_all
from ansible_collections.emergency.ops.plugins.module_utils.restore import Mismatch
from ansible_collections.emergency.ops.plugins.module_utils.swap import SwapFailed, swap_databases

# What a failure in each stage means for the databases. Before the swap db_restore verifies checksums
# ("verify") where pg_pitr recovers a temporary cluster ("recover").
BEFORE_SWAP = "failed before the swap: the live database was not touched"
OUTCOMES = {
    "preflight": "failed in preflight: nothing was touched",
    "verify": BEFORE_SWAP,
    "recover": BEFORE_SWAP,
    "restore": BEFORE_SWAP,
    "quiesce": BEFORE_SWAP,
    "swap": "failed during the swap: the previous database is live again",
}


class Run:
    """What the run did so far (``result``) and how far it got (``stage``); every exit reports both.
    ``made`` says how the side database was made (restored, recovered), for a failure after the swap."""

    def __init__(self, module, made, **result):
        self.module = module
        self.made = made
        self.stage = "preflight"
        self.result = dict(
            changed=False,
            backup=None,
            row_counts={},
            smoke_queries=[],
            terminated=[],
            kept_as=None,
            writers=[],
            downtime_seconds=None,
            timings={},  # seconds per phase: where the run's time went
            prior={"database": {}, "writers": {}},
            **result,
        )

    def fail(self, message, kind, failure):
        if self.stage == "after-swap":
            failure = "failed after the swap: the %s database is live, the previous one is kept as %s" % (
                self.made,
                self.result["kept_as"],
            )
        self.module.fail_json(msg=message, outcome=kind, failure=failure, stage=self.stage, **self.result)

    def run(self, body):
        """Exits with what ``body(run)`` returns (the outcome for the operator), or fails with the outcome
        kind the driver maps to an exit code and what the stage reached means for the databases."""
        try:
            outcome = body(self)
        except Mismatch as exc:
            self.result["row_counts"] = exc.counts
            self.fail(str(exc), "failed", OUTCOMES[self.stage])
        except SwapFailed as exc:
            self.result["terminated"] = exc.terminated
            failure = OUTCOMES["swap"] if exc.rolled_back else "failed during the swap: check the server"
            self.fail(str(exc), "failed", failure)
        except Failure as exc:
            self.fail(str(exc), exc.outcome, OUTCOMES.get(self.stage, "failed"))
        except NotSettled as exc:
            self.fail(str(exc), "failed", OUTCOMES.get(self.stage, "failed"))
        except KubeError as exc:
            kind = "unreachable" if exc.status == 0 and self.stage == "preflight" else "failed"
            self.fail(str(exc), kind, OUTCOMES.get(self.stage, "failed"))
        except Exception as exc:  # the server went away mid-restore, and the like
            self.fail("%s: %s" % (type(exc).__name__, exc), "failed", OUTCOMES.get(self.stage, "failed"))
        self.module.exit_json(outcome=outcome, stage=self.stage, **self.result)

    def rerun(self, conn, present, kube, swap):
        """This incident already swapped a side database in (``swap`` is the live database's marker):
        reports what, and unless in check mode finishes what a killed run may have left, the live
        database closed to connections and writers at 0."""
        p, result = self.module.params, self.result
        live = p["database"]["name"]
        result["backup"] = {k: v for k, v in swap.items() if k not in ("action", "incident")}
        result["backup"]["id"] = swap.get("backup")
        result["kept_as"] = swap.get("kept_as")
        if not self.module.check_mode:
            # After the swap: whatever fails from here, the restore role brings the writers back.
            self.stage = "after-swap"
            if not present[live]["allow_connections"]:
                allow_connections(conn, live, True)  # a killed run left it closed
                result["changed"] = True
            result["writers"] = scale_all(kube, p["writers"], "restored", p["incident"], p["timeout"])
            result["changed"] = result["changed"] or any(w["changed"] for w in result["writers"])
        self.stage = "already"

    def read_databases(self, conn):
        """The server's databases; the live one's entry (without its marker) is recorded as prior."""
        present = databases(conn)
        entry = dict(present.get(self.module.params["database"]["name"]) or {})
        entry.pop("marker", None)
        self.result["prior"]["database"] = entry
        return present

    def quiesce(self, kube, check_mode=False):
        """Scales every writer to 0 at once, recording their replicas; a server-side dry run in check mode."""
        p = self.module.params
        writers = scale_all(kube, p["writers"], "down", p["incident"], p["timeout"], check_mode=check_mode)
        self.result["writers"] = writers
        self.result["prior"]["writers"] = {w["name"]: w["previous_replicas"] for w in writers}

    def swap_in(self, conn, kube, details):
        """Quiesce, swap, bring back: the writers' downtime. ``details`` go into the live marker."""
        p, result = self.module.params, self.result
        live = p["database"]["name"]
        self.stage = "quiesce"
        timings = result["timings"]
        down_at = time.monotonic()
        try:
            self.quiesce(kube)
            timings["quiesce"] = round(time.monotonic() - down_at, 2)
            self.stage = "swap"
            present = databases(conn)
            result["terminated"], _closed = swap_databases(
                conn, present, live, p["side"], p["keep_as"], "restore", "pre", p["incident"], details
            )
            result["kept_as"] = p["keep_as"] if live in present else None
            timings["swap"] = round(time.monotonic() - down_at - timings["quiesce"], 2)
            self.stage = "after-swap"
        except BaseException:
            # Writers this run quiesced come back whatever happened; the failure that got us here is
            # the one reported, with where each writer stands.
            try:
                self.bring_back(kube)
            except (KubeError, NotSettled) as exc:
                result["writers_error"] = str(exc)
            raise
        back_at = time.monotonic()
        self.bring_back(kube)
        timings["writers_back"] = round(time.monotonic() - back_at, 2)
        result["downtime_seconds"] = round(time.monotonic() - down_at, 2)

    def bring_back(self, kube):
        """Every writer back to its recorded replicas at once, then waits until all are ready."""
        p, result = self.module.params, self.result
        writers = scale_all(kube, p["writers"], "restored", p["incident"], p["timeout"])
        if result["writers"]:
            by_name = {w["name"]: w for w in writers}
            for writer in result["writers"]:
                writer["replicas"] = by_name[writer["name"]]["replicas"]
        else:
            result["writers"] = writers
