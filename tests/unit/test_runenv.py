"""The run's environment: which of the operator's variables are passed, which are recorded, and the
FIFO that hands the private ones to ansible-playbook."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading

from driver import runenv

OPERATOR = {
    "HOME": "/home/oncall",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PATH": "/usr/bin",
    "EMERGENCY_SANDBOX_DIR": "/tmp/sandbox",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "PGPASSWORD": "pg-secret",
    "K8S_AUTH_API_KEY": "kube-token",
    "ANSIBLE_CALLBACK_PLUGINS": "/opt/callbacks",
    "https_proxy": "http://user:pw@proxy:3128",
    "VAULT_TOKEN": "vault-secret",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/x",
    "DB_PASSWORD": "db-secret",
}


def test_only_what_the_run_needs_is_passed_and_credentials_are_private():
    plain, private = runenv.split(OPERATOR)
    assert plain == {
        "HOME": "/home/oncall",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "EMERGENCY_SANDBOX_DIR": "/tmp/sandbox",
    }
    assert set(private) == {
        "AWS_SECRET_ACCESS_KEY",
        "PGPASSWORD",
        "K8S_AUTH_API_KEY",
        "ANSIBLE_CALLBACK_PLUGINS",
        "https_proxy",
    }
    # Named by the operator: passed, privately.
    _, private = runenv.split(OPERATOR, runenv.parse_names("VAULT_*, DB_PASSWORD"))
    assert {"VAULT_TOKEN", "DB_PASSWORD"} <= set(private)
    assert "SLACK_WEBHOOK_URL" not in private


def test_what_ansible_runner_and_the_driver_set_is_recorded_and_wins():
    seeded = {
        **OPERATOR,
        "ANSIBLE_CALLBACK_PLUGINS": "/opt/callbacks:/runner/callback",  # ansible-runner's, joined
        "ANSIBLE_STDOUT_CALLBACK": "awx_display",
    }
    env, private = runenv.for_run(seeded, OPERATOR, {"PATH": "/wrapper:/usr/bin", "ANSIBLE_CONFIG": "/a.cfg"})
    assert env["ANSIBLE_CALLBACK_PLUGINS"] == "/opt/callbacks:/runner/callback"
    assert env["ANSIBLE_STDOUT_CALLBACK"] == "awx_display" and env["PATH"] == "/wrapper:/usr/bin"
    assert "ANSIBLE_CALLBACK_PLUGINS" not in private
    assert not {"AWS_SECRET_ACCESS_KEY", "PGPASSWORD", "VAULT_TOKEN", "DB_PASSWORD"} & set(env)
    assert private["PGPASSWORD"] == "pg-secret"


def test_the_fifo_hands_the_values_once_and_leaves_nothing():
    with runenv.channel({"PGPASSWORD": "pg-secret"}) as opened:
        mode = os.stat(opened.path).st_mode
        assert stat.S_ISFIFO(mode) and stat.S_IMODE(mode) == 0o600
        with open(opened.path, "rb") as fifo:
            assert json.loads(fifo.read()) == {"PGPASSWORD": "pg-secret"}
        folder = opened.folder
    assert not folder.exists()


def test_a_fifo_nobody_reads_does_not_hang():
    done = threading.Event()

    def unread():
        with runenv.channel({"PGPASSWORD": "pg-secret"}):
            pass
        done.set()

    threading.Thread(target=unread, daemon=True).start()
    assert done.wait(10)


def test_the_wrapper_gives_ansible_playbook_the_private_values(tmp_path):
    """driver/bin/ansible-playbook adds the FIFO's values to the environment of what it execs."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ansible-playbook").write_text('#!/bin/sh\necho "$PGPASSWORD|${EMERGENCY_RUN_ENV_FIFO:-unset}"\n')
    (fake / "ansible-playbook").chmod(0o755)
    # An interpreter with no ansible-playbook beside it, so the one on PATH is used.
    python = tmp_path / "py" / "python3"
    python.parent.mkdir()
    python.symlink_to(os.path.realpath(sys.executable))
    with runenv.channel({"PGPASSWORD": "pg-secret"}) as opened:
        env = {
            "PATH": os.pathsep.join((str(runenv.WRAPPER_DIR), str(fake), "/usr/bin:/bin")),
            runenv.CHANNEL: str(opened.path),
            runenv.PYTHON: str(python),
        }
        out = subprocess.run(["ansible-playbook"], env=env, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "pg-secret|unset", out.stderr
