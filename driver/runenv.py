"""The environment a playbook run gets, and how its credentials reach it without being written down.

ansible-runner records the whole environment of a run, values included, in
``artifacts/<ident>/command``, and seeds that environment with the driver's own: every AWS key, database
password, Vault token or webhook URL the operator had exported would land in the incident folder, the
evidence that gets kept and shared. So the run's environment is built here instead:

* only the variables the playbooks and modules read are passed at all (``allowed``): the locale and
  home of the operator, ``ANSIBLE_*``, ``K8S_AUTH_*`` and ``KUBECONFIG``, ``AWS_*``, ``PG*``, the proxy
  and CA settings, the in-cluster API address, the project's own ``EMERGENCY_*`` settings, and whatever
  the operator names with ``--pass-env``; the rest
  (``VAULT_TOKEN``, ``SLACK_WEBHOOK_URL``, ``*_PASSWORD``...) never leaves the driver;
* of those, the ones that can hold a credential are *private*: they are not in the environment
  ansible-runner sees (and records), but handed to the run through a FIFO in a private temporary
  folder outside the incident folder. The run's PATH starts with ``driver/bin``, whose
  ``ansible-playbook`` runs this file: it reads them from the FIFO, adds them to its environment and
  execs the real ``ansible-playbook``. Nothing is stored: a FIFO holds no data on disk,
  and it is removed when the run ends;
* what ansible-runner records is therefore the command line, the working directory and an environment
  of plain values (paths, locale, the run's marker and the FIFO's path), with no credential in it.

The modules still read the credentials as before, from their process environment.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

CHANNEL = "EMERGENCY_RUN_ENV_FIFO"
PYTHON = "EMERGENCY_RUN_PYTHON"
"""Names the FIFO the private variables come through; the wrapper removes it from the environment."""

PLAIN = (
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "KUBERNETES_SERVICE_HOST",  # in a pod (AWX, the watch Deployment): where the API server is
    "KUBERNETES_SERVICE_PORT",
    "EMERGENCY_*",  # the project's own settings: the sandbox's folder, a test's stand-in pg_restore
)
"""Passed and recorded as they are: they locate things, they grant nothing."""

PRIVATE = (
    "ANSIBLE_*",
    "K8S_AUTH_*",
    "KUBECONFIG",
    "AWS_*",
    "BOTO_*",
    "PG*",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
"""Passed, never recorded: read by Ansible, kubernetes.core, boto3 and libpq, and able to hold a
credential (a token, a key, a password, a proxy URL with a password in it)."""


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def split(environ: Mapping[str, str], extra: Iterable[str] = ()) -> tuple[dict[str, str], dict[str, str]]:
    """The operator's variables the run needs, as (plain, private); everything else is left out.
    ``extra`` are names or ``NAME*`` patterns the operator asked to pass; they are private."""
    extra = tuple(extra)
    plain: dict[str, str] = {}
    private: dict[str, str] = {}
    for name, value in environ.items():
        if name == CHANNEL:
            continue
        if _matches(name, PRIVATE) or _matches(name, extra):
            private[name] = value
        elif _matches(name, PLAIN):
            plain[name] = value
    return plain, private


def for_run(
    seeded: Mapping[str, str], environ: Mapping[str, str], ours: Mapping[str, str], extra: Iterable[str] = ()
) -> tuple[dict[str, str], dict[str, str]]:
    """The run's recorded environment and its private variables.

    ``seeded`` is the environment ansible-runner prepared (the driver's own plus what it set itself,
    such as its callback plugin), ``environ`` the driver's, ``ours`` what the driver sets for the run.
    What ansible-runner or the driver set wins over the operator's value and is recorded: those are
    paths and switches, which the run needs exactly as set."""
    plain, private = split(environ, extra)
    set_by_runner = {k: v for k, v in seeded.items() if environ.get(k) != v}
    env = {**plain, **set_by_runner, **ours}
    return env, {k: v for k, v in private.items() if k not in env}


def parse_names(text: str | None) -> tuple[str, ...]:
    """``--pass-env`` / ``EMERGENCY_PASS_ENV``: names or patterns separated by commas or spaces."""
    return tuple(part for part in (text or "").replace(",", " ").split() if part)


class Channel:
    """A FIFO the private variables are written to once, for the one ``ansible-playbook`` that opens it.

    The writer runs in a thread because opening a FIFO blocks until its reader opens it; ``close()``
    releases a writer whose reader never came (the run failed before starting the playbook) and removes
    the folder."""

    def __init__(self, private: Mapping[str, str]):
        self.folder = Path(tempfile.mkdtemp(prefix="emergency-run-"))  # 0700
        self.path = self.folder / "env"
        os.mkfifo(self.path, 0o600)
        payload = json.dumps(dict(private)).encode()
        self.thread = threading.Thread(target=self._write, args=(payload,), daemon=True)
        self.thread.start()

    def _write(self, payload: bytes) -> None:
        with contextlib.suppress(OSError), open(self.path, "wb") as fifo:
            fifo.write(payload)

    def close(self) -> None:
        if self.thread.is_alive():  # nobody read it: open the other end so the writer can finish
            with contextlib.suppress(OSError):
                fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
                self.thread.join(timeout=5)
                os.close(fd)
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def channel(private: Mapping[str, str]) -> Iterator[Channel]:
    opened = Channel(private)
    try:
        yield opened
    finally:
        opened.close()


WRAPPER_DIR = Path(__file__).with_name("bin")
"""Put first on the run's PATH: its ``ansible-playbook`` runs ``main`` below with the driver's Python."""


def main(argv: list[str]) -> int:
    """Reads the private variables from the FIFO named in the environment, then execs the real
    ansible-playbook (the one beside this interpreter, else the next one on PATH) with them added."""
    path = os.environ.pop(CHANNEL, None)
    if path:
        with open(path, "rb") as fifo:
            os.environ.update(json.loads(fifo.read() or b"{}"))
        with contextlib.suppress(OSError):
            os.unlink(path)  # read once
    here = os.path.realpath(WRAPPER_DIR)
    os.environ["PATH"] = os.pathsep.join(
        d for d in os.environ.get("PATH", "").split(os.pathsep) if os.path.realpath(d or ".") != here
    )
    beside = Path(sys.executable).with_name("ansible-playbook")
    program = str(beside) if beside.exists() else shutil.which("ansible-playbook")
    if not program:
        print("ansible-playbook is not installed", file=sys.stderr)
        return 127
    os.execv(program, [program, *argv])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
