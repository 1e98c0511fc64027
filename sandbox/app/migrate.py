"""``python -m sandbox.app migrate status|rollback|up``: the application's schema migrations.

It stands in for the order-book application's own binary (runbook 000: ``./matchbook migrate
rollback``), and the sandbox's Kubernetes API runs it for ``kubectl exec ... -- matchbook ...`` (see
``sandbox/kubeapi/exec.py``). It owns the versioned up and down SQL of the seeded schema and
connects with ``DATABASE_URL``, as the application's pods do.

- ``migrate status`` lists every known migration and whether it is applied (newest first).
- ``migrate rollback`` reverts the newest applied migration: its down SQL and the removal of its row
  in ``schema_migrations`` happen in one transaction, under a lock on that table, so two rollbacks at
  once revert two migrations one after the other, never the same one twice. The initial schema has no
  down migration and is refused.
- ``migrate up`` applies every known migration that is not applied, oldest first.

Exit codes: 0 done, 1 refused or failed (message on stderr), 2 usage.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    up: str | None  # None: part of the initial schema (seed.sql)
    down: str | None  # None: cannot be reverted


MIGRATIONS = (
    Migration("20240101000000", "initial schema", None, None),
    Migration(
        "20240115093000",
        "index order_history by market and time",
        "CREATE INDEX IF NOT EXISTS order_history_market_idx ON order_history (market, created_at)",
        "DROP INDEX IF EXISTS order_history_market_idx",
    ),
    Migration(
        "20240201120000",
        "trades.fee and an index of trades by slot",
        "ALTER TABLE trades ADD COLUMN IF NOT EXISTS fee numeric(20, 6) NOT NULL DEFAULT 0; "
        "CREATE INDEX IF NOT EXISTS trades_slot_idx ON trades (slot)",
        "DROP INDEX IF EXISTS trades_slot_idx; ALTER TABLE trades DROP COLUMN IF EXISTS fee",
    ),
)
BY_VERSION = {m.version: m for m in MIGRATIONS}


class Refused(Exception):
    pass


def connect():
    import psycopg

    url = os.environ.get("DATABASE_URL")
    if not url:
        raise Refused("DATABASE_URL is not set")
    try:
        return psycopg.connect(url, connect_timeout=10)
    except psycopg.Error as exc:
        # The message of a failed connection can quote the URL; say only what failed.
        raise Refused(f"cannot connect to the database: {type(exc).__name__}") from None


def applied(conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version DESC")]


def status() -> int:
    with connect() as conn:
        done = set(applied(conn))
    for migration in sorted(MIGRATIONS, key=lambda m: m.version, reverse=True):
        mark = "applied" if migration.version in done else "pending"
        print(f"{migration.version}  {mark:8} {migration.name}")
    for version in sorted(done - set(BY_VERSION), reverse=True):
        print(f"{version}  applied  (unknown to this build)")
    return 0


def rollback() -> int:
    with connect() as conn, conn.transaction():
        conn.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
        versions = applied(conn)
        if not versions:
            raise Refused("no migration is applied")
        newest = versions[0]
        migration = BY_VERSION.get(newest)
        if migration is None:
            raise Refused(f"migration {newest} is unknown to this build: no down SQL to run")
        if migration.down is None:
            raise Refused(f"migration {newest} ({migration.name}) cannot be rolled back")
        conn.execute(migration.down)
        conn.execute("DELETE FROM schema_migrations WHERE version = %s", (newest,))
    now = versions[1] if len(versions) > 1 else "none"
    print(f"rolled back {newest} ({migration.name}); newest is now {now}")
    return 0


def up() -> int:
    with connect() as conn, conn.transaction():
        conn.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
        done = set(applied(conn))
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            if migration.up is None:
                raise Refused(f"migration {migration.version} ({migration.name}) is applied by the seed only")
            conn.execute(migration.up)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (migration.version,))
            print(f"applied {migration.version} ({migration.name})")
    return 0


def add_parser(commands) -> None:
    migrate = commands.add_parser("migrate", help="schema migrations")
    migrate.add_argument("action", choices=("status", "rollback", "up"))


def run(action: str) -> int:
    try:
        return {"status": status, "rollback": rollback, "up": up}[action]()
    except Refused as exc:
        print(f"matchbook migrate {action}: {exc}", file=sys.stderr)
        return 1
