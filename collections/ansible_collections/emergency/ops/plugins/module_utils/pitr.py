# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""Point-in-time recovery with pgBackRest: the repository's recoverable window, a recovery into a new
data directory, and the temporary PostgreSQL that runs it beside the live cluster.

pgBackRest, pg_ctl and pg_dump are run as programs: no Ansible module or Python library restores a
pgBackRest backup, starts a cluster from a data directory, or dumps with several jobs. Everything that
touches the repository or the recovered data directory runs as the operating-system user that owns
them (``postgres``) when the module runs as root, as PostgreSQL refuses to run as root.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import time

from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure
from ansible_collections.emergency.ops.plugins.module_utils.pgbin import find_pg_bin
from ansible_collections.emergency.ops.plugins.module_utils.postgres import PG_DUMP, incident_suffix, pg_env
from ansible_collections.emergency.ops.plugins.module_utils.times import iso

PGBACKREST_ARGS = dict(
    type="dict",
    required=True,
    options=dict(
        config=dict(type="path", required=True),
        stanza=dict(type="str", required=True),
        pg_bin=dict(type="path"),  # found by pgbin.find_pg_bin when not given
        os_user=dict(type="str", default="postgres"),
        executable=dict(type="path", default="pgbackrest"),
    ),
)

STOPPED = re.compile(r"recovery stopping (?:before|after) .*")


def as_user(settings, argv):
    """``argv`` run as the repository's user when we are root (runuser keeps our environment out)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", settings["os_user"], "--", *argv]
    return argv


def run(settings, argv, what, timeout=None):
    proc = subprocess.run(
        as_user(settings, argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise Failure(
            "%s failed (exit %d): %s" % (what, proc.returncode, (proc.stderr or proc.stdout)[-1500:])
        )
    return proc.stdout


def pgbackrest(settings, command, *options, timeout=None):
    argv = [
        settings["executable"],
        "--config=%s" % settings["config"],
        "--stanza=%s" % settings["stanza"],
        *options,
        command,
    ]
    return run(settings, argv, "pgbackrest %s" % command, timeout)


def moment(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)


def window(settings):
    """The repository's complete backups (oldest first) and the recoverable window's start: the end of
    the oldest backup (a recovery cannot stop before the backup it starts from is consistent)."""
    try:
        info = json.loads(pgbackrest(settings, "info", "--output=json", timeout=60) or "[]")
    except ValueError as exc:
        raise Failure("pgbackrest info did not return JSON: %s" % exc) from exc
    stanza = next((s for s in info if s.get("name") == settings["stanza"]), None)
    if stanza is None or stanza.get("status", {}).get("code") not in (0, None):
        message = (stanza or {}).get("status", {}).get("message", "no such stanza")
        raise Failure("pgBackRest stanza %s is not usable: %s" % (settings["stanza"], message), "invalid")
    backups = [
        dict(
            label=b["label"],
            type=b["type"],
            started=moment(b["timestamp"]["start"]),
            stopped=moment(b["timestamp"]["stop"]),
        )
        for b in stanza.get("backup", [])
        if not b.get("error")
    ]
    backups.sort(key=lambda b: b["stopped"])
    if not backups:
        raise Failure(
            "the pgBackRest repository holds no backup of stanza %s" % settings["stanza"], "invalid"
        )
    return backups


def describe_window(backups, now):
    return "%s to %s (UTC)" % (iso(backups[0]["stopped"]), iso(now))


def choose(backups, target, now):
    """The newest backup that ended at or before ``target``; invalid outside the window."""
    if target > now:
        raise Failure(
            "%s is in the future; the recoverable window is %s"
            % (iso(target), describe_window(backups, now)),
            "invalid",
        )
    usable = [b for b in backups if b["stopped"] <= target]
    if not usable:
        raise Failure(
            "%s is before the oldest backup (%s, ended %s); the recoverable window is %s"
            % (iso(target), backups[0]["label"], iso(backups[0]["stopped"]), describe_window(backups, now)),
            "invalid",
        )
    return usable[-1]


def archive_now(conn, timeout):
    """Makes the archive hold everything committed until now: a transaction with an id commits (so a
    recovery to any time up to now finds a commit after its target and stops there), the WAL file is
    switched, and we wait until the archiver has archived it."""
    conn.execute("SELECT pg_current_xact_id()")
    segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    deadline = time.monotonic() + timeout
    while True:
        archived, failed = conn.execute(
            "SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver"
        ).fetchone()
        if archived and archived[8:] >= segment[8:]:
            return segment
        if time.monotonic() > deadline:
            raise Failure(
                "WAL file %s was not archived within %ss (last archived %s, last failed %s): "
                "check archive_command" % (segment, timeout, archived, failed)
            )
        time.sleep(0.2)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryCluster:
    """A PostgreSQL recovered by pgBackRest into ``<workdir>/emergency-pitr-<incident>``: listening on
    a free 127.0.0.1 port and on a socket in its private folder, never archiving, removed by ``remove``.
    One folder per incident, so a run that was killed leaves nothing a re-run does not clean up first."""

    def __init__(self, settings, workdir, incident):
        self.settings = settings
        self.home = os.path.join(workdir, "emergency-pitr-%s" % incident_suffix(incident))
        self.data = os.path.join(self.home, "data")
        self.run_dir = os.path.join(self.home, "run")
        self.log = os.path.join(self.home, "postgres.log")
        self.port = None
        self.pg_bin = settings.get("pg_bin") or find_pg_bin()

    def pg(self, program):
        if not self.pg_bin:
            raise Failure("no PostgreSQL server programs (pg_ctl) found here; set pgbackrest.pg_bin")
        return os.path.join(self.pg_bin, program)

    def remove(self):
        """Stops the cluster if it runs (immediately: it holds nothing we keep) and removes its folder."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            subprocess.run(
                as_user(self.settings, [self.pg("pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop"]),
                capture_output=True,
                text=True,
                check=False,
            )
        shutil.rmtree(self.home, ignore_errors=True)
        return not os.path.exists(self.home)

    def prepare(self):
        self.remove()
        os.makedirs(self.run_dir, mode=0o700)
        os.chmod(self.home, 0o700)
        if os.geteuid() == 0:
            user = pwd.getpwnam(self.settings["os_user"])
            for path in (self.home, self.run_dir):
                os.chown(path, user.pw_uid, user.pw_gid)

    def restore(self, backup, target, timeout):
        """``pgbackrest restore`` of ``backup`` into the new data directory, to stop at ``target`` and
        promote; archiving is switched off in the recovered configuration."""
        pgbackrest(
            self.settings,
            "restore",
            "--pg1-path=%s" % self.data,
            "--set=%s" % backup["label"],
            "--type=time",
            "--target=%s" % target.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
            "--target-action=promote",
            "--archive-mode=off",
            timeout=timeout,
        )

    def start(self, timeout):
        """Starts the recovered cluster: its own port and socket folder, a pg_hba that lets in only local
        socket connections (the folder is 0700, so only its owner and root), archiving off whatever the
        copied configuration says."""
        hba = os.path.join(self.home, "pg_hba.conf")
        with open(hba, "w") as handle:
            handle.write("local all all trust\n")
        if os.geteuid() == 0:
            user = pwd.getpwnam(self.settings["os_user"])
            os.chown(hba, user.pw_uid, user.pw_gid)
        self.port = free_port()
        options = " ".join(
            "-c %s=%s" % pair
            for pair in (
                ("port", self.port),
                ("listen_addresses", "127.0.0.1"),
                ("unix_socket_directories", self.run_dir),
                ("hba_file", hba),
                ("archive_mode", "off"),
            )
        )
        argv = [
            self.pg("pg_ctl"),
            "-D",
            self.data,
            "-l",
            self.log,
            "-w",
            "-t",
            str(timeout),
            "-o",
            options,
            "start",
        ]
        proc = subprocess.run(as_user(self.settings, argv), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise Failure("the recovered cluster did not start: %s" % self.log_tail())

    def connection(self, user, dbname):
        """Connection settings for postgres.connect and pg_env: the private socket, no password."""
        return dict(host=self.run_dir, port=self.port, user=user, name=dbname, password="", sslmode="disable")

    def wait_promoted(self, connect, user, timeout):
        """Waits until recovery has stopped at the target and the cluster is promoted; returns the log's
        line saying where recovery stopped."""
        deadline = time.monotonic() + timeout
        while True:
            if not os.path.exists(os.path.join(self.data, "postmaster.pid")):
                raise Failure("the recovered cluster stopped during recovery: %s" % self.log_tail())
            try:
                with connect(self.connection(user, "postgres")) as conn:
                    if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        break
            except Failure:
                pass  # still starting up
            if time.monotonic() > deadline:
                raise Failure(
                    "the recovered cluster was not promoted within %ss: %s" % (timeout, self.log_tail())
                )
            time.sleep(0.25)
        stopped = STOPPED.findall(self.read_log())
        if not stopped:
            raise Failure("recovery did not report stopping at the target: %s" % self.log_tail())
        return stopped[-1].strip()

    def read_log(self):
        try:
            with open(self.log, errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def log_tail(self):
        lines = [line for line in self.read_log().splitlines() if line.strip()]
        return " | ".join(lines[-6:]) or "no log"

    def dump(self, user, dbname, jobs, folder, timeout):
        """``pg_dump --format=directory --jobs`` of the recovered database into ``folder``."""
        argv = [
            PG_DUMP,
            "--format=directory",
            "--jobs=%d" % jobs,
            "--compress=0",
            "--file=%s" % folder,
            "--dbname=%s" % dbname,
            "--no-password",
        ]
        proc = subprocess.run(
            argv,
            env=pg_env(self.connection(user, dbname)),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise Failure(
                "pg_dump of the recovered %s failed (exit %d): %s"
                % (dbname, proc.returncode, proc.stderr[-1500:])
            )
