"""The PostgreSQL server programs are those the distribution installed, of whichever major version."""

from __future__ import annotations

import os
from pathlib import Path

from ansible_collections.emergency.ops.plugins.module_utils.pgbin import find_pg_bin


def test_finds_the_installed_server_programs():
    found = find_pg_bin()
    assert found and os.access(Path(found) / "pg_ctl", os.X_OK)


def test_a_major_version_not_installed_is_not_found():
    assert find_pg_bin("9") is None


def test_a_data_directory_major_version_finds_its_own_programs():
    found = Path(find_pg_bin())
    if found.parent.parent == Path("/usr/lib/postgresql"):  # Debian's per-version layout
        assert find_pg_bin(found.parent.name) == str(found)
