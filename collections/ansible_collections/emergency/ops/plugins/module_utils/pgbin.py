# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""Where the PostgreSQL server programs (pg_ctl, initdb, postgres) are installed.

Debian and Ubuntu install them per major version under /usr/lib/postgresql/<major>/bin (15 on
Debian 12, 17 on Debian 13, 16 on Ubuntu 24.04) and put only client wrappers on PATH; other
distributions put them on PATH. Shared by the PITR module (its default pg_bin) and the sandbox.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os
import re
import shutil
import subprocess

DEBIAN_ROOT = "/usr/lib/postgresql"


def _has_server(folder):
    return bool(folder) and os.access(os.path.join(folder, "pg_ctl"), os.X_OK)


def find_pg_bin(version=None):
    """The server programs' folder: of major ``version`` when given (a data directory's PG_VERSION),
    otherwise the newest Debian one, then ``pg_config --bindir``, then pg_ctl's folder on PATH.
    None when no server is installed."""
    if version:
        folder = os.path.join(DEBIAN_ROOT, str(version), "bin")
        return folder if _has_server(folder) else None
    found = [f for f in glob.glob(os.path.join(DEBIAN_ROOT, "*", "bin")) if _has_server(f)]
    numeric = [f for f in found if re.match(r"^\d+$", os.path.basename(os.path.dirname(f)))]
    if numeric:
        return max(numeric, key=lambda f: int(os.path.basename(os.path.dirname(f))))
    pg_config = shutil.which("pg_config")
    if pg_config:
        proc = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if proc.returncode == 0 and _has_server(proc.stdout.strip()):
            return proc.stdout.strip()
    pg_ctl = shutil.which("pg_ctl")
    return os.path.dirname(pg_ctl) if pg_ctl else None
