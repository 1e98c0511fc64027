"""Benchmark: `python -m driver restore --backup latest` against the floor and against runbook 001.

On the sandbox's database, grown to each size in turn (several tables with indexes), in one run:

(a) the floor: plain `pg_restore -j <cores>` of the same backup, from local files, into an empty database
    (measured before (b) and after (c); the mean of the two is the floor);
(b) runbook 001's way: download the gzipped plain SQL dump, gunzip, drop and create the database,
    `psql -f` (one core);
(c) ours: `python -m driver restore --backup latest --yes` end to end from S3: checksums, pg_restore into
    a side database, row counts and smoke queries, writers quiesced, swap, writers back.

Last line, at the largest size: ratio_vs_pg_restore=<(c)/(a)> seed_vs_ours=<(b)/(c)>
downtime_fraction=<writers' downtime/(c)>; the line before it, the same three at the smallest size
(1.2 GiB by default). Targets: ratio <= 1.25, downtime fraction <= 0.10.

    .venv/bin/python -m bench.restore [--sizes-mb 1100,2500]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

from ansible_collections.emergency.ops.plugins.module_utils import postgres
from ansible_collections.emergency.ops.plugins.module_utils import store as backup_store
from bench.common import sandbox, timed

TABLES = {
    "bench_trades": (
        "id bigserial PRIMARY KEY, market text NOT NULL, maker text NOT NULL, taker text NOT NULL, "
        "price numeric(20, 6) NOT NULL, quantity numeric(20, 6) NOT NULL, slot bigint NOT NULL, "
        "created_at timestamptz NOT NULL DEFAULT now()",
        "INSERT INTO bench_trades (market, maker, taker, price, quantity, slot) "
        "SELECT (ARRAY['SOL-USDC','BTC-USDC','ETH-USDC'])[1 + g %% 3], md5('m' || g), md5('t' || g), "
        "100 + (g %% 997) / 10.0, 1 + g %% 13, 250000000 + g FROM generate_series(%s, %s) g",
        ("CREATE INDEX ON bench_trades (market, created_at)", "CREATE INDEX ON bench_trades (slot)"),
    ),
    "bench_events": (
        "id bigserial PRIMARY KEY, slot bigint NOT NULL, signature text NOT NULL, kind text NOT NULL, "
        "payload jsonb NOT NULL",
        "INSERT INTO bench_events (slot, signature, kind, payload) "
        "SELECT 250000000 + g, md5('s' || g), (ARRAY['order_placed','order_cancelled','fill'])[1 + g %% 3], "
        "jsonb_build_object('n', g, 'owner', md5('o' || g %% 1000)) FROM generate_series(%s, %s) g",
        ("CREATE INDEX ON bench_events (slot)", "CREATE INDEX ON bench_events (kind, slot)"),
    ),
}
BATCH = 400_000


def connect(box, dbname="app"):
    settings = box.admin_database()
    return psycopg.connect(
        host=settings["host"],
        port=settings["port"],
        user=settings["user"],
        password=settings["password"],
        dbname=dbname,
        autocommit=True,
    )


def settle(box, timeout: float = 300.0) -> None:
    """The same starting point for each of (a), (b) and (c): a checkpoint, and the WAL archiver caught
    up (the previous measurement's WAL is archived by pgBackRest in the background, and a checkpoint it
    triggered would otherwise land on the next measurement)."""
    deadline = time.monotonic() + timeout
    with connect(box, "postgres") as conn:
        conn.execute("CHECKPOINT")
        while time.monotonic() < deadline:
            pending = conn.execute(
                "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
            ).fetchone()[0]
            if not pending:
                return
            time.sleep(0.5)
    sys.exit("the WAL archiver did not catch up")


def database_size(box) -> int:
    with connect(box) as conn:
        return conn.execute("SELECT pg_database_size('app')").fetchone()[0]


def grow(box, target_bytes: int) -> int:
    """Adds rows to the bench tables (two at once, one per core) until the database reaches the size."""
    with connect(box) as conn:
        for table, (columns, _insert, indexes) in TABLES.items():
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
            conn.execute(f"ALTER TABLE {table} OWNER TO app")
            for index in indexes:
                name = f"{table}_{index.split('(')[1].split(')')[0].replace(', ', '_')}_idx"
                conn.execute(index.replace("CREATE INDEX ON", f"CREATE INDEX IF NOT EXISTS {name} ON"))

    errors = []

    def fill(table, start):
        try:
            with connect(box) as conn:
                conn.execute(TABLES[table][1], (start, start + BATCH - 1))
        except psycopg.Error as exc:
            errors.append(exc)

    start = 0
    while database_size(box) < target_bytes:
        workers = [threading.Thread(target=fill, args=(t, start)) for t in TABLES]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if errors:
            sys.exit(f"generating rows failed: {errors[0]}")
        start += BATCH
    with connect(box) as conn:
        conn.execute("VACUUM ANALYZE")
    return database_size(box)


def driver(*args: str, incidents: Path) -> tuple[float, dict]:
    argv = [sys.executable, "-m", "driver", *args, "--json", "--incidents-dir", str(incidents)]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"driver {args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed, json.loads(proc.stdout)


def drop(box, *names: str) -> None:
    with connect(box, "postgres") as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(box, status, size_mb: int, work: Path) -> dict:
    incidents = work / "incidents"
    size = grow(box, size_mb * 1024 * 1024)
    cores = os.cpu_count() or 1
    print(f"size {size / 1024**3:.2f} GiB ({size_mb} MB asked), {cores} cores", flush=True)
    _t, backup = driver("backup", "--incident", f"BENCH-B-{uuid.uuid4().hex[:6]}", incidents=incidents)
    backup_id = backup["outputs"]["backup"]["backup"]["id"]
    store = backup_store.Store(**box.backup_store())
    env = postgres.pg_env(box.admin_database())

    # (a) the floor: the same backup, already local, restored with pg_restore -j into an empty database.
    local = work / f"local-{backup_id}"
    manifest = store.manifest(backup_id)
    for name in manifest["objects"]:
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        store.s3.download_file(store.bucket, store.key(backup_id, name), str(local / name))

    def plain_pg_restore() -> float:
        drop(box, "bench_floor")
        settle(box)
        took = timed(
            f"createdb -T template0 bench_floor && pg_restore -j {cores} -d bench_floor {local / 'dump'}",
            env=env,
            shell=True,
        )
        drop(box, "bench_floor")
        return took

    # The floor is measured before (b) and again after (c), and their mean is used: on a shared machine
    # one measurement of it varies by a quarter between runs.
    floors = [plain_pg_restore()]

    # (b) runbook 001: a gzipped plain SQL dump in the bucket; download, gunzip, drop, create, psql.
    sql_key = store.key("runbook-001", "app.sql.gz")
    subprocess.run(f"pg_dump -d app | gzip > {work / 'app.sql.gz'}", shell=True, check=True, env=env)
    store.s3.upload_file(str(work / "app.sql.gz"), store.bucket, sql_key)
    (work / "app.sql.gz").unlink()
    get = (
        f"{sys.executable} -c \"import boto3; boto3.client('s3', endpoint_url='{status['s3']['endpoint']}', "
        f"aws_access_key_id='{status['s3']['access_key']}', "
        f"aws_secret_access_key='{status['s3']['secret_key']}', region_name='{status['s3']['region']}')"
        f".download_file('{store.bucket}', '{sql_key}', "
        f"'{work / 'dl.sql.gz'}')\""
    )
    settle(box)
    runbook = timed(
        f"{get} && gunzip -f {work / 'dl.sql.gz'} && dropdb --if-exists bench_runbook && "
        f"createdb bench_runbook && "
        f"psql -q -v ON_ERROR_STOP=1 -d bench_runbook -f {work / 'dl.sql'} >/dev/null",
        env=env,
        shell=True,
    )
    drop(box, "bench_runbook")
    (work / "dl.sql").unlink(missing_ok=True)
    store.s3.delete_object(Bucket=store.bucket, Key=sql_key)

    # (c) ours, end to end.
    incident = f"BENCH-R-{uuid.uuid4().hex[:6]}"
    settle(box)
    ours, result = driver(
        "restore", "--backup", "latest", "--yes", "--incident", incident, incidents=incidents
    )
    restore = result["outputs"]["restore"]
    assert restore["backup"]["id"] == backup_id, restore
    downtime = float(restore["downtime_seconds"])
    parts = dict(restore.get("timings") or {}, writers_down=downtime)
    parts["outside_the_module"] = round(ours - sum(step["duration"] for step in result["steps"]), 2)
    print(f"  (c) parts, seconds: {parts}", flush=True)
    drop(box, f"app_pre_{postgres.incident_suffix(incident)}")
    floors.append(plain_pg_restore())
    subprocess.run(["rm", "-rf", str(local)], check=True)
    floor = sum(floors) / len(floors)
    figures = {
        "size_bytes": size,
        "floor": floor,
        "runbook": runbook,
        "ours": ours,
        "downtime": downtime,
        "ratio": ours / floor,
        "seed_vs_ours": runbook / ours,
        "downtime_fraction": downtime / ours,
    }
    print(
        f"size {size / 1024**3:.2f} GiB: (a) pg_restore -j{cores} {floor:.1f}s "
        f"(mean of {' and '.join(f'{f:.1f}s' for f in floors)}), "
        f"(b) runbook 001 {runbook:.1f}s, "
        f"(c) ours {ours:.1f}s, writers down {downtime:.2f}s -> ratio {figures['ratio']:.2f}, "
        f"runbook/ours {figures['seed_vs_ours']:.2f}, downtime fraction {figures['downtime_fraction']:.3f}",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", default="1100,2500", help="database sizes, in MB, smallest first")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes_mb.split(","))
    started = time.perf_counter()
    with sandbox(EMERGENCY_SANDBOX_READY_DELAY="0.5") as (box, status):
        work = Path(tempfile.mkdtemp(prefix="bench-restore-", dir=str(box.dir)))
        results = [measure(box, status, size, work) for size in sizes]
    print(f"bench took {time.perf_counter() - started:.0f}s")
    # The line before the last: the smallest size's figures; the last line: the largest size's.
    for figures in (results[0], results[-1]) if len(results) > 1 else results:
        print(figures_line(figures))


def figures_line(figures: dict) -> str:
    return (
        f"ratio_vs_pg_restore={figures['ratio']:.2f} seed_vs_ours={figures['seed_vs_ours']:.2f} "
        f"downtime_fraction={figures['downtime_fraction']:.3f}"
    )


if __name__ == "__main__":
    main()
