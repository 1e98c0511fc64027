"""Emergency procedures as code: the driver that runs the playbooks and reports what they did."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository: playbooks/, roles/, inventories/ and collections/ live here."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4
