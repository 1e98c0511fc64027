"""The sandbox: a small copy of a platform on 127.0.0.1, in a state folder.

Real programs where they can run here — PostgreSQL and Redis from Debian's packages — and emulators
only where they cannot: the AWS S3 API (moto server) and the Kubernetes API (sandbox.kubeapi).
Ports are picked free on the first ``up`` and kept, so the kubeconfig and the inventory stay valid.

    .sandbox/
        state.json       ports, pids, settings of the running sandbox
        endpoints.json   what the sandbox inventory reads (no secret values)
        kubeconfig       for kubectl and the procedures (0600)
        secrets/         generated credentials (0700/0600)
        redis/ logs/
    /var/tmp/emergency-sandbox-<hash of the state folder's path>/   (the "PostgreSQL home")
        postgres/        data/, run/ (its socket), postgres.log
        pgbackrest/      pgBackRest's config, its path repository (WAL archive, backups), logs

PostgreSQL's files live outside the state folder because, run as root, the cluster runs as the
``postgres`` user, which cannot reach a clone under /root or under any 0700 folder; /var/tmp is
world-traversable, survives reboots, and gives the socket a short path whatever the clone's (a
Unix socket path is limited to 107 bytes). Not root, the cluster runs as the invoking user there too.

PostgreSQL archives its WAL continuously with pgBackRest into a path repository in the folder, and
``up`` takes a first full backup, so ``restore --to-time`` can recover to any moment since. A path and
not moto's S3: pgBackRest's S3 driver needs TLS, and against ``moto_server --ssl`` a ``repo-put`` was
seen to hang, which ``archive_command`` cannot afford (WAL piles up while it hangs).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ansible_collections.emergency.ops.plugins.module_utils.pgbin import find_pg_bin
from sandbox import ROOT, processes, wallet
from sandbox.edge import monitoring

HERE = Path(__file__).resolve().parent
NAMESPACE = "matchbook"
DATABASE = "app"
DB_USER = "app"
ADMIN_USER = "postgres"
# The seeded user who also has a database login of their own (lockdown --user sets it NOLOGIN).
PERSON_LOGIN = "alice"
BUCKET = "matchbook-backups"
S3_REGION = "us-east-1"
S3_KEY, S3_SECRET = "sandbox", "sandbox-secret"  # moto accepts any credentials
# The edge parts come last: Alertmanager needs the receiver's address, Prometheus Alertmanager's,
# and the ingress controller waits for the Kubernetes API by itself.
COMPONENTS = ("postgres", "redis", "s3", "kubeapi", "receiver", "alertmanager", "prometheus", "ingress")
SERVERS = COMPONENTS[1:]  # the parts that are one process of ours to stop
PGBACKREST = "/usr/bin/pgbackrest"
STANZA = DATABASE


PG_HOMES = Path("/var/tmp")


@functools.cache
def seeded_ingress_host() -> str | None:
    """The host of the seeded Ingress's first rule (platform.yaml), which the ingress serves."""
    for doc in yaml.safe_load_all((HERE / "platform.yaml").read_text()):
        if (doc or {}).get("kind") == "Ingress":
            rules = (doc.get("spec") or {}).get("rules") or [{}]
            return rules[0].get("host")
    return None


def default_dir() -> Path:
    return Path(os.environ.get("EMERGENCY_SANDBOX_DIR") or ROOT / ".sandbox").resolve()


class PartFailed(Exception):
    """One part of the sandbox could not start: which, why (one line), and where its log is."""

    def __init__(self, part: str, reason: str, log: Path):
        self.part, self.reason, self.log = part, " ".join(str(reason).split())[:300], log
        super().__init__(f"{part}: {self.reason}")


class SandboxFailed(Exception):
    def __init__(self, failures: list[PartFailed]):
        self.failures = failures
        super().__init__("; ".join(str(f) for f in failures))


class Sandbox:
    def __init__(self, folder: Path | None = None):
        self.dir = Path(folder).resolve() if folder else default_dir()
        self.state_file = self.dir / "state.json"
        # One PostgreSQL home per state folder, found again from the folder's path.
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
        self.pg_home = PG_HOMES / f"emergency-sandbox-{digest}"
        self.state: dict[str, Any] = (
            json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        )

    # -- state ---------------------------------------------------------------------------------
    def save(self) -> None:
        self.state_file.write_text(json.dumps(self.state, indent=2))

    def port(self, name: str) -> int:
        ports = self.state.setdefault("ports", {})
        if name not in ports:
            ports[name] = processes.free_port()
        return ports[name]

    def pid(self, name: str) -> int | None:
        return self.state.get("pids", {}).get(name)

    @property
    def pg_bin(self) -> Path:
        """The server programs of the cluster's major version once it exists, else the newest
        installed; kept in the state so every later command uses the same ones."""
        version_file = self.pg_home / "postgres" / "data" / "PG_VERSION"
        version = version_file.read_text().strip() if version_file.exists() else None
        found = self.state.get("pg_bin") if not version else find_pg_bin(version)
        found = found or find_pg_bin()
        if not found:
            raise PartFailed(
                "postgres",
                "PostgreSQL's server programs (pg_ctl) not found; install Debian's postgresql package",
                self.log("postgres"),
            )
        self.state["pg_bin"] = found
        return Path(found)

    def log(self, name: str) -> Path:
        if name == "postgres":
            return self.pg_home / "postgres" / "postgres.log"
        if name == "backup":
            return self.pg_home / "pgbackrest" / "log"
        return self.dir / "logs" / f"{name}.log"

    def _make_pg_home(self) -> None:
        """Created by us and only reused if it is ours: a real folder (not a link) owned by this user,
        since anyone can create names in /var/tmp. Root makes it traversable for ``postgres``."""
        with contextlib.suppress(FileExistsError):
            self.pg_home.mkdir(mode=0o755 if os.geteuid() == 0 else 0o700)
        if not self._pg_home_is_ours():
            raise PartFailed("postgres", f"{self.pg_home} exists and is not this user's folder", self.pg_home)

    def _pg_home_is_ours(self) -> bool:
        home = self.pg_home
        return not home.is_symlink() and home.is_dir() and home.stat().st_uid == os.geteuid()

    def running(self, name: str) -> bool:
        if name == "postgres":
            return (self.pg_home / "postgres" / "data" / "postmaster.pid").exists() and processes.port_open(
                self.port("postgres")
            )
        return processes.alive(self.pid(name)) and processes.port_open(self.port(name))

    def secret(self, name: str, make=lambda: secrets.token_urlsafe(24)) -> str:
        folder = self.dir / "secrets"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(make())
        return path.read_text().strip()

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self) -> dict[str, Any]:
        """Starts every part that is not running. A part that fails does not stop the others; all
        failures are raised together at the end (SandboxFailed), one per part."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if "created_at" not in self.state and self._pg_home_is_ours():
            # A PostgreSQL home left by an earlier state folder at this path whose state is gone: its
            # passwords are lost with it, so it starts again from scratch.
            self._discard_pg_home()
        self.state.setdefault("ready_delay", float(os.environ.get("EMERGENCY_SANDBOX_READY_DELAY", "2.0")))
        self.state.setdefault("created_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        failures = []
        for name in COMPONENTS:
            if not self.running(name):
                with self._part(name, failures):
                    if not processes.bindable(self.port(name)):
                        raise PartFailed(name, f"port 127.0.0.1:{self.port(name)} is in use", self.log(name))
                    getattr(self, f"_start_{name}")()
            self.save()
        self.write_endpoints()
        if not {"postgres", "s3"} & {f.part for f in failures}:
            with self._part("backup", failures):
                self._seed_backup()
                self._seed_pitr_backup(fresh=False)
        self.save()
        if failures:
            raise SandboxFailed(failures)
        return self.status()

    @contextlib.contextmanager
    def _part(self, name: str, failures: list[PartFailed]):
        """Whatever stops one part (a program missing, a port taken, a server that exits) becomes
        one PartFailed for it."""
        try:
            yield
        except PartFailed as exc:
            failures.append(exc)
        except FileNotFoundError as exc:
            failures.append(PartFailed(name, f"program not found: {exc.filename}", self.log(name)))
        except Exception as exc:  # a part's failure of any kind is reported, not raised
            failures.append(PartFailed(name, str(exc) or type(exc).__name__, self.log(name)))

    def _discard_pg_home(self) -> None:
        data = self.pg_home / "postgres" / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.pg_home, ignore_errors=True)

    def down(self) -> None:
        if not self.state:
            return
        data = self.pg_home / "postgres" / "data"
        if (data / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop", check=False)
        for name in SERVERS:
            processes.stop(self.pid(name))
        self.state["pids"] = {}
        self.save()

    def reset(self) -> dict[str, Any]:
        """Back to the seeded state: platform objects, database rows, cache and bucket."""
        if not self.state:
            return self.up()
        for name in SERVERS:
            processes.stop(self.pid(name))
        shutil.rmtree(self.dir / "redis", ignore_errors=True)
        if self.running("postgres"):
            self._seed_database(recreate=True)
        status = self.up()
        # The seeded state gets its own full backup: the recoverable window starts there.
        self._seed_pitr_backup(fresh=True)
        return status

    def destroy(self) -> None:
        self.down()
        # nginx is the ingress controller's child and stops with it; one left by a controller that
        # was killed would keep the port.
        with contextlib.suppress(OSError, ValueError):
            processes.stop(int((self.dir / "ingress" / "nginx.pid").read_text()))
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.pg_home, ignore_errors=True)

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        ports = self.state.get("ports", {})
        password = self.secret("postgres-password") if self.state else ""
        pg_port = ports.get("postgres")
        return {
            "dir": str(self.dir),
            "running": {name: self.running(name) for name in COMPONENTS} if self.state else {},
            "kubeconfig": str(self.dir / "kubeconfig"),
            "namespace": NAMESPACE,
            "kubeapi": {
                "url": f"https://127.0.0.1:{ports.get('kubeapi')}",
                "ca": str(self.dir / "tls" / "ca.crt"),
            },
            "postgres": {
                "host": "127.0.0.1",
                "port": pg_port,
                "database": DATABASE,
                "user": DB_USER,
                "password_file": str(self.dir / "secrets" / "postgres-password"),
                "data_dir": str(self.pg_home / "postgres" / "data"),
                "bin": self.state.get("pg_bin"),
                # Where recoveries put their temporary files and clusters: reachable by postgres.
                "workdir": str(self.pg_home),
                # The admin login the recovery procedures use (create, rename and drop databases).
                "admin_user": ADMIN_USER,
                "admin_password_file": str(self.dir / "secrets" / "postgres-admin-password"),
                # The sandbox's own throwaway credentials, for scripts; never a real one.
                "dsn": f"postgresql://{DB_USER}:{password}@127.0.0.1:{pg_port}/{DATABASE}",
            },
            "s3": {
                "endpoint": f"http://127.0.0.1:{ports.get('s3')}",
                "bucket": BUCKET,
                "access_key": S3_KEY,
                "secret_key": S3_SECRET,
                "secret_key_file": str(self.dir / "secrets" / "s3-secret-key"),
                "region": S3_REGION,
            },
            # The password is in password_file (and in the redis-secret Secret's url), not in the url.
            "redis": {
                "url": f"redis://127.0.0.1:{ports.get('redis')}/0",
                "password_file": str(self.dir / "secrets" / "redis-password"),
            },
            # Answers as Slack, PagerDuty Events v2 and Statuspage do; GET <url>/_received lists calls.
            # The channels' credentials are in files (write_notification_credentials), never here.
            "receiver": {
                "url": f"http://127.0.0.1:{ports.get('receiver')}",
                **self.notification_credential_files(),
            },
            # nginx, routed by the sandbox's ingress controller from the cluster's Ingresses; send
            # the Host header of an Ingress rule (`host`, the seeded one's) to reach its Service.
            "ingress": {"url": f"http://127.0.0.1:{ports.get('ingress')}", "host": seeded_ingress_host()},
            "prometheus": {
                "url": f"http://127.0.0.1:{ports.get('prometheus')}",
                "rules_dir": str(self.rules_dir()),
            },
            "alertmanager": {"url": f"http://127.0.0.1:{ports.get('alertmanager')}"},
        }

    def pods(self) -> dict[str, list[dict[str, Any]]]:
        """Each service's pods (by their app.kubernetes.io/name label) with phase, readiness and the
        addresses they answer on: 127.0.0.1 and a host port per container port for the application's
        pods (the kubelet's sandbox.local/host-ports annotation), the record's IP for the others."""
        if not self.running("kubeapi"):
            return {}
        from ansible_collections.emergency.ops.plugins.module_utils.kube import Kube

        kube = Kube(str(self.dir / "kubeconfig"), None, NAMESPACE)
        found: dict[str, list[dict[str, Any]]] = {}
        for pod in kube.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]:
            meta, status = pod["metadata"], pod.get("status") or {}
            service = (meta.get("labels") or {}).get("app.kubernetes.io/name", "")
            ports = json.loads((meta.get("annotations") or {}).get("sandbox.local/host-ports", "{}"))
            ip = status.get("podIP")
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
            )
            found.setdefault(service, []).append(
                {
                    "name": meta["name"],
                    "phase": "Terminating" if meta.get("deletionTimestamp") else status.get("phase"),
                    "ready": ready,
                    "addresses": [f"127.0.0.1:{port}" for port in ports.values()]
                    if ports
                    else ([ip] if ip else []),
                }
            )
        return found

    def write_endpoints(self) -> None:
        """What the sandbox inventory reads: endpoints and file paths, no secret values."""
        status = self.status()
        endpoints = {
            "kubeconfig": status["kubeconfig"],
            "namespace": NAMESPACE,
            "postgres": {k: v for k, v in status["postgres"].items() if k != "dsn"},
            "s3": {k: v for k, v in status["s3"].items() if k != "secret_key"},
            "redis": status["redis"],
            "receiver": status["receiver"],
            "ingress": status["ingress"],
            "prometheus": status["prometheus"],
            "alertmanager": status["alertmanager"],
            "pgbackrest": {
                "config": str(self.pgbackrest_config()),
                "stanza": STANZA,
                "pg_bin": status["postgres"]["bin"],
            },
        }
        (self.dir / "endpoints.json").write_text(json.dumps(endpoints, indent=2))

    # -- components ----------------------------------------------------------------------------
    def _pg(self, program: str, *args: str, check: bool = True, env: dict | None = None, **kw):
        argv = [str(self.pg_bin / program), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            argv = ["runuser", "-u", "postgres", "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)
        if check and proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
            raise RuntimeError(f"{program} failed (exit {proc.returncode}): {lines[-1]}")
        return proc

    def _start_postgres(self) -> None:
        self._make_pg_home()
        home = self.pg_home / "postgres"
        data, run = home / "data", home / "run"
        fresh = not (data / "PG_VERSION").exists()
        if fresh:
            run.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(home, "postgres", "postgres")
                shutil.chown(run, "postgres", "postgres")
            self._pg(
                "initdb",
                "-D",
                str(data),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-instructions",
            )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port("postgres")),
            "unix_socket_directories": f"'{run}'",
            "wal_level": "replica",
            "max_wal_senders": "4",
            "fsync": "off",  # a throwaway sandbox: speed over durability
            "log_destination": "'stderr'",
            # Continuous WAL archiving into pgBackRest's repository (restore --to-time).
            "archive_mode": "on",
            "archive_command": f"'{PGBACKREST} --config={self.pgbackrest_config()} "
            f"--stanza={STANZA} archive-push %p'",
            "archive_timeout": "60",
        }
        self._write_pgbackrest_config()
        conf = data / "postgresql.auto.conf"
        conf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        if os.geteuid() == 0:
            shutil.chown(conf, "postgres", "postgres")
        self._pg("pg_ctl", "-D", str(data), "-l", str(home / "postgres.log"), "-w", "-t", "60", "start")
        self._set_admin_password()
        if fresh:
            self._seed_database(recreate=False)

    # -- pgBackRest --------------------------------------------------------------------------------
    def pgbackrest_config(self) -> Path:
        return self.pg_home / "pgbackrest" / "pgbackrest.conf"

    def _write_pgbackrest_config(self) -> None:
        """A path repository in the folder; everything is owned by the user PostgreSQL runs as, which
        is the one that runs archive-push (from archive_command), backups and restores."""
        home = self.pg_home / "pgbackrest"
        for sub in ("repo", "log", "lock", "spool"):
            (home / sub).mkdir(parents=True, exist_ok=True, mode=0o750)
        settings = {
            "global": {
                "repo1-path": home / "repo",
                "repo1-retention-full": "2",
                "log-path": home / "log",
                "lock-path": home / "lock",
                "spool-path": home / "spool",
                "log-level-console": "warn",
                "log-level-file": "info",
                "start-fast": "y",  # an immediate checkpoint: the first backup does not wait for one
                "compress-type": "lz4",
                "process-max": "2",
                "repo1-bundle": "y",  # small files bundled: the first backup takes half the time
            },
            STANZA: {
                "pg1-path": self.pg_home / "postgres" / "data",
                "pg1-port": self.port("postgres"),
                "pg1-socket-path": self.pg_home / "postgres" / "run",
                # The cluster's superuser, whoever runs it: pgBackRest would otherwise log in as the
                # operating-system user, which is no role of the cluster when the sandbox is not root's.
                "pg1-user": ADMIN_USER,
            },
        }
        text = "".join(
            f"[{section}]\n" + "".join(f"{k}={v}\n" for k, v in values.items()) + "\n"
            for section, values in settings.items()
        )
        self.pgbackrest_config().write_text(text)
        if os.geteuid() == 0:
            for path in [home, *home.rglob("*")]:
                shutil.chown(path, "postgres", "postgres")

    def _pgbackrest(self, command: str, *args: str) -> subprocess.CompletedProcess:
        argv = [PGBACKREST, f"--config={self.pgbackrest_config()}", f"--stanza={STANZA}", *args, command]
        if os.geteuid() == 0:  # the repository and the cluster's files belong to postgres
            argv = ["runuser", "-u", "postgres", "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"pgbackrest {command} failed ({proc.returncode}): {proc.stderr or proc.stdout}"
            )
        return proc

    def _seed_pitr_backup(self, fresh: bool) -> None:
        """The stanza and a first full backup (a new one when ``fresh``). A cluster started before WAL
        archiving was configured is restarted with it first."""
        data = self.pg_home / "postgres" / "data"
        current = self._psql_as("postgres", "postgres", "-tAc", "SHOW archive_command").stdout.strip()
        if str(self.pgbackrest_config()) not in current:
            self._pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
            self._start_postgres()
        self._pgbackrest("stanza-create")
        info = json.loads(self._pgbackrest("info", "--output=json").stdout or "[]")
        if fresh or not any(stanza.get("backup") for stanza in info):
            self._pgbackrest("backup", "--type=full")

    def _set_admin_password(self) -> None:
        """The superuser gets a password for TCP logins (the socket stays trust-only, for the sandbox
        itself); it reaches psql on its standard input, never on a command line."""
        password = self.secret("postgres-admin-password")
        self._psql_as("postgres", "postgres", input=f"ALTER ROLE {ADMIN_USER} PASSWORD '{password}';\n")

    def _psql_as(self, user: str, database: str, *args: str, **kw):
        """psql over the cluster's socket (trust-only, for the sandbox itself); stops at an error."""
        socket_dir = self.pg_home / "postgres" / "run"
        return self._pg(
            "psql", "-h", str(socket_dir), "-p", str(self.port("postgres")), "-U", user, "-d", database,
            "-v", "ON_ERROR_STOP=1", "-q", *args, **kw,
        )  # fmt: skip

    def _psql(self, sql: str, database: str = "postgres") -> None:
        self._psql_as("postgres", database, "-c", sql)

    def _seed_database(self, recreate: bool) -> None:
        password = self.secret("postgres-password")
        if recreate:
            self._psql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        self._psql(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DB_USER}') THEN "
            f"CREATE ROLE {DB_USER} LOGIN CREATEDB; END IF; END $$"
        )
        # The password reaches psql on its standard input, never on a command line.
        self._psql_as("postgres", "postgres", input=f"ALTER ROLE {DB_USER} PASSWORD '{password}';\n")
        self._psql(f"CREATE DATABASE {DATABASE} OWNER {DB_USER}")
        self._psql_as(DB_USER, DATABASE, input=(HERE / "seed.sql").read_text())
        # A person with a login of their own beside the application's (an analyst reading the database
        # directly): what lockdown --user sets NOLOGIN. Its password, like the application users',
        # is `<name>-password` (docs/sandbox.md); a reset gives the login back.
        self._psql_as(
            "postgres",
            DATABASE,
            input=(
                f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PERSON_LOGIN}') THEN "
                f"CREATE ROLE {PERSON_LOGIN}; END IF; END $$;\n"
                f"ALTER ROLE {PERSON_LOGIN} LOGIN PASSWORD '{PERSON_LOGIN}-password';\n"
                f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {PERSON_LOGIN};\n"
            ),
        )

    def _start_redis(self) -> None:
        folder = self.dir / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        port = self.port("redis")
        # The password goes in a 0600 configuration file (redis-server reads the file named as its first
        # argument), never on the command line where ps shows it.
        password = self.secret("redis-password")  # creates the secrets folder too
        config = self.dir / "secrets" / "redis.conf"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"requirepass {password}\n")
        proc = processes.spawn(
            [
                "redis-server",
                str(config),
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(folder),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--protected-mode",
                "yes",
            ],
            self.dir / "logs" / "redis.log",
        )
        processes.wait_for_port(port, 15, proc, "redis-server")
        self.state.setdefault("pids", {})["redis"] = proc.pid

    def _start_receiver(self) -> None:
        port = self.port("receiver")
        proc = processes.spawn(
            [sys.executable, "-m", "sandbox.receiver", "--port", str(port)],
            self.dir / "logs" / "receiver.log",
        )
        processes.wait_for_port(port, 15, proc, "receiver")
        self.state.setdefault("pids", {})["receiver"] = proc.pid
        self.write_notification_credentials()

    def write_notification_credentials(self) -> None:
        """The channels' credentials as files (0600), as the inventory reads them: a Slack webhook URL
        is itself a credential (its last part is the token), so it is written whole."""
        token = self.secret("slack-webhook-token", lambda: secrets.token_hex(12))
        url_file = self.dir / "secrets" / "slack-webhook-url"
        fd = os.open(url_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:  # rewritten: the receiver's port may change
            handle.write(
                f"http://127.0.0.1:{self.port('receiver')}/slack/services/T0SANDBOX/B0SANDBOX/{token}"
            )
        self.secret("pagerduty-routing-key", lambda: secrets.token_hex(16))
        self.secret("statuspage-api-key", lambda: secrets.token_hex(16))
        self.secret("webhook-token", lambda: secrets.token_hex(16))

    def notification_credential_files(self) -> dict[str, str]:
        folder = self.dir / "secrets"
        return {
            "slack_webhook_url_file": str(folder / "slack-webhook-url"),
            "pagerduty_routing_key_file": str(folder / "pagerduty-routing-key"),
            "statuspage_api_key_file": str(folder / "statuspage-api-key"),
            "webhook_token_file": str(folder / "webhook-token"),
        }

    # -- edge: Alertmanager, Prometheus, the ingress controller and nginx ----------------------
    def rules_dir(self) -> Path:
        """Prometheus' rule files: EMERGENCY_SANDBOX_RULES_DIR when set (kept in the state, so later
        commands use the same), else <state>/prometheus/rules."""
        chosen = os.environ.get(monitoring.RULES_ENV) or self.state.get("rules_dir")
        if self.state and chosen:
            self.state["rules_dir"] = str(Path(chosen).resolve())
        return Path(chosen).resolve() if chosen else self.dir / "prometheus" / "rules"

    def _start_alertmanager(self) -> None:
        folder = self.dir / "alertmanager"
        (folder / "data").mkdir(parents=True, exist_ok=True)
        config = folder / "alertmanager.yml"
        config.write_text(monitoring.alertmanager_config(f"http://127.0.0.1:{self.port('receiver')}"))
        binary = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
        port = self.port("alertmanager")
        proc = processes.spawn(
            monitoring.alertmanager_argv(binary, config, folder / "data", port), self.log("alertmanager")
        )
        processes.wait_for_port(port, 30, proc, "alertmanager")
        self.state.setdefault("pids", {})["alertmanager"] = proc.pid

    def _start_prometheus(self) -> None:
        folder = self.dir / "prometheus"
        targets = folder / "targets" / "pods.json"
        for sub in ("data", "targets"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        self.rules_dir().mkdir(parents=True, exist_ok=True)
        if not targets.exists():
            targets.write_text("[]\n")  # the ingress controller fills it once it sees the pods
        port = self.port("prometheus")
        config = folder / "prometheus.yml"
        config.write_text(
            monitoring.prometheus_config(port, self.port("alertmanager"), targets, self.rules_dir())
        )
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        proc = processes.spawn(
            monitoring.prometheus_argv(binary, config, folder / "data", port), self.log("prometheus")
        )
        processes.wait_for_port(port, 60, proc, "prometheus")
        self.state.setdefault("pids", {})["prometheus"] = proc.pid

    def _start_ingress(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise FileNotFoundError(2, "not found", "nginx")
        port = self.port("ingress")
        proc = processes.spawn(
            [
                sys.executable,
                "-m",
                "sandbox.edge",
                "--state",
                str(self.dir),
                "--port",
                str(port),
                "--nginx",
                nginx,
                "--targets",
                str(self.dir / "prometheus" / "targets" / "pods.json"),
            ],
            self.log("ingress"),
        )
        processes.wait_for_port(port, 30, proc, "ingress controller (nginx)")
        self.state.setdefault("pids", {})["ingress"] = proc.pid

    def _start_s3(self) -> None:
        port = self.port("s3")
        moto = Path(sys.executable).parent / "moto_server"
        proc = processes.spawn([str(moto), "-H", "127.0.0.1", "-p", str(port)], self.dir / "logs" / "s3.log")
        processes.wait_for_port(port, 30, proc, "moto server")
        self.state.setdefault("pids", {})["s3"] = proc.pid
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name=S3_REGION,
        )
        s3.create_bucket(Bucket=BUCKET)
        path = self.dir / "secrets" / "s3-secret-key"
        if not path.exists():
            self.secret("s3-secret-key")  # creates the folder and the file 0600
            path.write_text(S3_SECRET)

    def admin_database(self) -> dict[str, Any]:
        """The admin connection to the sandbox's database, as the recovery modules take it."""
        return {
            "host": "127.0.0.1",
            "port": self.port("postgres"),
            "name": DATABASE,
            "user": ADMIN_USER,
            "password": self.secret("postgres-admin-password"),
            "sslmode": "disable",
        }

    def backup_store(self) -> dict[str, Any]:
        return {
            "bucket": BUCKET,
            "prefix": f"postgres/{DATABASE}",
            "endpoint_url": f"http://127.0.0.1:{self.port('s3')}",
            "region": S3_REGION,
            "access_key": S3_KEY,
            "secret_key": S3_SECRET,
        }

    def _seed_backup(self) -> None:
        """A first backup in the bucket (moto keeps objects in memory, so after every start of it),
        made by the same code as `python -m driver backup`."""
        from ansible_collections.emergency.ops.plugins.module_utils import dump, postgres, store, times

        backups = store.Store(**self.backup_store())
        if next(backups.complete_backups(limit=1), None):
            return
        database = self.admin_database()
        conn = postgres.connect(database, DATABASE, autocommit=False)
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            dump.dump(conn, snapshot, times.utcnow(), database, backups, "SANDBOX-SEED", 2, 1, str(self.dir))
        finally:
            conn.close()

    def _start_kubeapi(self) -> None:
        from sandbox.kubeapi import write_kubeconfig
        from sandbox.kubeapi.tls import certificates

        port = self.port("kubeapi")
        # HTTPS with the sandbox's own CA and a bearer token, as a cluster: a client without the CA
        # or with another token is refused.
        ca, cert, key = certificates(self.dir / "tls")
        self.secret("kube-token")
        ready = self.dir / "kubeapi.ready"
        ready.unlink(missing_ok=True)
        secrets_file = self._write_secret_manifests()
        # A new emulator has new pods: the logs of the previous one's go.
        shutil.rmtree(self.dir / "pods", ignore_errors=True)
        proc = processes.spawn(
            [
                sys.executable,
                "-m",
                "sandbox.kubeapi",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--ready-delay",
                str(self.state["ready_delay"]),
                "--images",
                str(HERE / "images.yaml"),
                # Container logs, one folder per pod; crash-looping containers restart after 1 s, 2 s, ...
                "--pods-dir",
                str(self.dir / "pods"),
                "--restart-backoff",
                "1",
                "--seed",
                str(HERE / "platform.yaml"),
                "--seed",
                str(secrets_file),
                "--ready-file",
                str(ready),
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(key),
                "--token-file",
                str(self.dir / "secrets" / "kube-token"),
            ],
            self.dir / "logs" / "kubeapi.log",
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Kubernetes API emulator did not start; see {self.dir / 'logs' / 'kubeapi.log'}"
                )
            time.sleep(0.05)
        self.state.setdefault("pids", {})["kubeapi"] = proc.pid
        write_kubeconfig(
            self.dir / "kubeconfig",
            f"https://127.0.0.1:{port}",
            NAMESPACE,
            token=self.secret("kube-token"),
            ca_file=ca,
        )
        self._wait_platform_ready()

    def _write_secret_manifests(self) -> Path:
        password = self.secret("postgres-password")
        pg_port = self.port("postgres")
        values = {
            "postgres-secret": {
                "username": DB_USER,
                "password": password,
                "host": "127.0.0.1",
                "port": str(pg_port),
                "database": DATABASE,
                "url": f"postgresql://{DB_USER}:{password}@127.0.0.1:{pg_port}/{DATABASE}",
            },
            "redis-secret": {
                "password": self.secret("redis-password"),
                "url": f"redis://:{self.secret('redis-password')}@127.0.0.1:{self.port('redis')}/0",
            },
            "api-keys": {
                "admin-key": self.secret("api-admin-key"),
                "webhook-key": self.secret("api-webhook-key"),
            },
            # The crank's wallet (runbook 000 "Compromised Crank Wallet"), a keypair file's JSON.
            "crank-keypair": {"keypair": self.secret("crank-keypair", wallet.new_keypair)},
        }
        docs = [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            }
            for name, data in values.items()
        ]
        path = self.dir / "secrets" / "platform-secrets.yaml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump_all(docs, handle)
        return path

    def _wait_platform_ready(self, timeout: float = 90) -> None:
        """Every seeded Deployment and StatefulSet has all its replicas ready: for the application's
        pods that is their readiness probe answering (database and Redis reachable with the Secrets'
        credentials)."""
        from ansible_collections.emergency.ops.plugins.module_utils.kube import Kube

        kube = Kube(str(self.dir / "kubeconfig"), None, NAMESPACE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workloads = kube.request("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")["items"]
            workloads += kube.request("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets")["items"]
            if workloads and all(
                w.get("status", {}).get("readyReplicas", 0) >= w["spec"].get("replicas", 1) for w in workloads
            ):
                return
            time.sleep(0.2)
        raise RuntimeError("the sandbox's workloads did not become ready")
