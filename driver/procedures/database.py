"""Data recovery (runbook 000 "Database Recovery"; 001 DB restore with row-count checks and the daily
backup with 30-day retention)."""

from __future__ import annotations

from typing import Any

from driver.procedure import Argument, Procedure


def _size(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def summarize_backup(outputs: dict[str, Any]) -> list[str]:
    backup = outputs.get("backup", {})
    made = backup.get("backup") or {}
    lines = []
    if made.get("id"):
        tables = made.get("row_counts", {})
        lines.append(
            f"backup {made['id']} of {made.get('database')}: {made.get('objects')} objects, "
            f"{_size(made.get('bytes'))}, {len(tables)} tables, {sum(tables.values())} rows "
            f"-> s3://{backup.get('store')}/{made['id']}/"
        )
        if made.get("seconds") == 0:
            lines.append("  (already made for this incident; not made again)")
    elif made:
        lines.append(f"would back up {made.get('database')} ({_size(made.get('database_bytes'))})")
    for pruned in backup.get("pruned", []):
        lines.append(f"pruned {pruned['id']}: {pruned['reason']}")
    if backup.get("kept"):
        lines.append(f"kept {len(backup['kept'])} backups, newest {backup['kept'][0]}")
    return lines


def summarize_restore(outputs: dict[str, Any]) -> list[str]:
    restore = outputs.get("restore", {})
    if not restore:
        return []
    backup = restore.get("backup") or {}
    lines = [restore.get("outcome", "")]
    if backup.get("id") or backup.get("backup"):
        made = backup.get("created_at") or backup.get("at")
        lines.append(
            f"backup {backup.get('id') or backup.get('backup')} (made {made}) -> {restore.get('database')}"
        )
    if restore.get("source") == "snapshot":
        snapshot = restore.get("snapshot") or {}
        lines += [
            f"snapshot {snapshot.get('id')} (made {snapshot.get('created')}) -> instance "
            f"{restore.get('instance')} at {restore.get('new_endpoint') or 'no endpoint yet'}",
            f"Secret {restore.get('secret')} switched: {restore.get('secret_switched')}, put back: "
            f"{restore.get('secret_put_back')}; writers restarted: "
            f"{', '.join(restore.get('writers_restarted') or []) or 'none'}",
            f"{restore.get('kept_instance')} is kept",
        ]
        return lines
    counts = restore.get("row_counts_verified") or {}
    if counts:
        lines.append(f"verified {len(counts)} tables, {sum(counts.values())} rows, equal to the manifest")
    if restore.get("smoke_queries"):
        lines.append(f"smoke queries passed: {', '.join(restore['smoke_queries'])}")
    if restore.get("kept_as"):
        lines.append(f"previous database kept as {restore['kept_as']} (restore-undo swaps it back)")
    for writer in restore.get("writers", []):
        lines.append(
            f"writer {writer['name']}: {writer.get('previous_replicas')} -> {writer.get('replicas')} replicas"
        )
    if restore.get("downtime_seconds") is not None:
        lines.append(f"writers' downtime {restore['downtime_seconds']}s")
    return lines


def summarize_undo(outputs: dict[str, Any]) -> list[str]:
    undo = outputs.get("restore_undo", {})
    if not undo:
        return []
    verb = "swapped back" if undo.get("changed") else "already swapped back"
    return [
        f"{undo.get('swapped_back')} {verb} as {undo.get('database')}; "
        f"the restored database is kept as {undo.get('kept_as')}"
    ]


def summarize_cleanup(outputs: dict[str, Any]) -> list[str]:
    cleanup = outputs.get("restore_cleanup", {})
    dropped = cleanup.get("dropped", [])
    if not cleanup:
        return []
    if not dropped:
        return [f"no kept database older than {cleanup.get('older_than')}"]
    verb = "would drop" if cleanup.get("check_mode") else "dropped"
    return [f"{verb} {d['name']} ({d['role']}, kept {d['kept_at']}, {_size(d['size'])})" for d in dropped]


def summarize_migrate_rollback(outputs: dict[str, Any]) -> list[str]:
    rollback = outputs.get("migrate_rollback", {})
    if not rollback:
        return []
    lines = [
        f"{rollback.get('outcome')}: {rollback.get('rolled_back')} "
        f"(newest {rollback.get('newest_before')} -> {rollback.get('newest_after') or 'unchanged'})",
        f"command in {rollback.get('service')}/{rollback.get('pod')}: {rollback.get('command')}",
    ]
    lines += [f"  {line}" for line in rollback.get("output_tail") or [] if line]
    return lines


def summarize_db_failover(outputs: dict[str, Any]) -> list[str]:
    failover = outputs.get("db_failover", {})
    if not failover:
        return []
    promoted = failover.get("promoted") or {}
    return [
        f"{failover.get('outcome')}: {promoted.get('id')} -> {failover.get('new_endpoint') or 'unchanged'}",
        f"Secret {failover.get('secret')} switched: {failover.get('secret_switched')}; "
        f"writers restarted: {', '.join(failover.get('writers') or []) or 'none'}; "
        f"{failover.get('kept_instance')} is kept",
    ]


def _times():
    """The collection's time reader, loaded from its file: importing it through the
    ``ansible_collections`` package here would shadow Ansible's collection loader later in the run."""
    import importlib.util

    from driver import ROOT

    path = ROOT / "collections/ansible_collections/emergency/ops/plugins/module_utils/times.py"
    spec = importlib.util.spec_from_file_location("_emergency_ops_times", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_restore_time(values: dict[str, Any], platform) -> None:
    """``--before`` and ``--to-time`` read as the modules will read them, so a time that does not parse
    exits 2 before anything runs (the lock is not even taken)."""
    from driver.validate import InputError

    for flag, var in (("--before", "restore_before"), ("--to-time", "restore_to_time")):
        if values.get(var):
            try:
                _times().parse_when(values[var])
            except ValueError as exc:
                raise InputError(f"restore {flag}: {exc}") from None


PROCEDURES = (
    Procedure(
        name="backup",
        role="backup",
        runbooks=("000 Database Recovery (backups)", "001 daily backup with 30-day retention"),
        arguments=(Argument("--prune", "backup_prune"),),
        summarize=summarize_backup,
    ),
    Procedure(
        name="restore",
        role="restore",
        runbooks=(
            "000 Database Recovery: restore from backup",
            "001 DB restore with row-count checks",
            "002 restore from snapshot (RDS)",
        ),
        arguments=(
            Argument("--backup", "restore_backup", metavar="latest|ID"),
            Argument("--before", "restore_before", metavar="TIME"),
            Argument("--to-time", "restore_to_time", metavar="TIME"),
            Argument("--from-snapshot", "restore_from_snapshot", metavar="ID|latest"),
        ),
        one_of=("--backup", "--before", "--from-snapshot", "--to-time"),
        destructive=True,
        timeout_var="restore_timeout",
        summarize=summarize_restore,
        check=check_restore_time,
    ),
    Procedure(
        name="restore-undo",
        role="restore_undo",
        runbooks=("000 Database Recovery: going back after a restore",),
        destructive=True,
        timeout_var="restore_undo_timeout",
        summarize=summarize_undo,
    ),
    Procedure(
        name="restore-cleanup",
        role="restore_cleanup",
        runbooks=("000 Database Recovery: housekeeping after a restore",),
        arguments=(Argument("--older-than", "restore_cleanup_older_than", metavar="AGE"),),
        destructive=True,
        summarize=summarize_cleanup,
    ),
    Procedure(
        name="migrate-rollback",
        role="migrate_rollback",
        runbooks=("000 Database Rollback",),
        destructive=True,
        timeout_var="migrate_rollback_timeout",
        summarize=summarize_migrate_rollback,
    ),
    Procedure(
        name="db-failover",
        role="db_failover",
        runbooks=("002 promote read replica",),
        destructive=True,
        timeout_var="db_failover_timeout",
        summarize=summarize_db_failover,
    ),
)
