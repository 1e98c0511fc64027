# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""The dump pipeline of db_backup: a parallel directory-format ``pg_dump`` of an exported snapshot whose
files are uploaded to the backup store as soon as pg_dump has closed them, the snapshot's row counts,
and the manifest, written last."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import subprocess
import tempfile
import threading
import time

from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure
from ansible_collections.emergency.ops.plugins.module_utils.postgres import client, pg_env, row_counts
from ansible_collections.emergency.ops.plugins.module_utils.store import (
    MANIFEST,
    MANIFEST_SCHEMA,
    new_backup_id,
    sha256_file,
)
from ansible_collections.emergency.ops.plugins.module_utils.times import iso


def process_tree(root):
    """The pid of pg_dump and of its worker processes."""
    pids, parents = {root}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in pids and pid not in pids:
                pids.add(pid)
                grew = True
    return pids


def open_files(pids):
    paths = set()
    for pid in pids:
        folder = "/proc/%d/fd" % pid
        try:
            for fd in os.listdir(folder):
                try:
                    paths.add(os.readlink(os.path.join(folder, fd)))
                except OSError:
                    continue
        except OSError:
            continue
    return paths


class Pipeline:
    """Uploads each file pg_dump has finished (closed by every pg_dump process) and deletes it."""

    def __init__(self, store, backup_id, folder):
        self.store, self.backup_id, self.folder = store, backup_id, folder
        self.objects, self.peak = {}, 0

    def ship(self, name):
        path = os.path.join(self.folder, name)
        size = os.path.getsize(path)
        digest = sha256_file(path)
        self.store.upload(path, self.store.key(self.backup_id, "dump", name), digest)
        self.objects["dump/" + name] = {"sha256": digest, "size": size}
        os.unlink(path)

    def pending(self):
        return sorted(n for n in os.listdir(self.folder) if "dump/" + n not in self.objects)

    def run(self, proc):
        while proc.poll() is None:
            names = self.pending()
            if names:
                self.peak = max(self.peak, sum(os.path.getsize(os.path.join(self.folder, n)) for n in names))
                busy = open_files(process_tree(proc.pid))
                for name in names:
                    # toc.dat is written when pg_dump finishes; it is shipped once pg_dump has exited.
                    if name != "toc.dat" and os.path.join(self.folder, name) not in busy:
                        self.ship(name)
            time.sleep(0.2)
        if proc.returncode == 0:
            for name in self.pending():
                self.ship(name)


def count_rows(conn, counts, problems):
    try:
        counts.update(row_counts(conn))
    except Exception as exc:  # reported by the caller once pg_dump is done
        problems.append(exc)


def dump(conn, snapshot, created, database, store, incident, jobs, compression, workdir, client_bin=None):
    """Dumps the database as of ``snapshot`` (exported by ``conn``, whose transaction stays open) to the
    store; returns ``(backup_id, manifest, peak_local_bytes)``."""
    backup_id = new_backup_id(created)
    version = conn.execute("SHOW server_version").fetchone()[0]
    size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    staging = tempfile.mkdtemp(prefix="emergency-backup-", dir=workdir)
    os.chmod(staging, 0o700)
    folder = os.path.join(staging, "dump")
    try:
        argv = [
            client("pg_dump", client_bin),
            "--format=directory",
            "--jobs=%d" % jobs,
            "--compress=%d" % compression,
            "--snapshot=%s" % snapshot,
            "--file=%s" % folder,
            "--dbname=%s" % database["name"],
            "--no-password",
        ]
        # pg_dump runs as a child so its files can be shipped while it writes the next ones.
        errors = open(os.path.join(staging, "pg_dump.err"), "w+")  # noqa: SIM115 - closed in finally
        proc = subprocess.Popen(argv, env=pg_env(database), stdout=subprocess.DEVNULL, stderr=errors)
        while not os.path.isdir(folder) and proc.poll() is None:
            time.sleep(0.05)
        # The counts come from the exported snapshot: exactly the rows pg_dump dumps. They are
        # taken while the pipeline ships files, so the dump does not pile up on local disk.
        counts, problems = {}, []
        counter = threading.Thread(target=count_rows, args=(conn, counts, problems))
        counter.start()
        pipeline = Pipeline(store, backup_id, folder)
        if os.path.isdir(folder):
            pipeline.run(proc)
        proc.wait()
        counter.join()
        conn.rollback()
        if problems:
            raise Failure("counting the rows in the dump's snapshot failed: %s" % problems[0])
        if proc.returncode != 0:
            errors.seek(0)
            raise Failure("pg_dump failed (exit %d): %s" % (proc.returncode, errors.read()[-1500:]))
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "id": backup_id,
            "database": database["name"],
            "server_version": version,
            "created_at": iso(created),
            "incident": incident,
            "format": "pg_dump directory",
            "jobs": jobs,
            "database_bytes": size,
            "objects": pipeline.objects,
            "row_counts": counts,
        }
        # Written last: a backup without its manifest is incomplete and never restored.
        store.put_json(store.key(backup_id, MANIFEST), manifest)
    finally:
        if "errors" in locals():
            errors.close()
        shutil.rmtree(staging, ignore_errors=True)
    return backup_id, manifest, pipeline.peak
