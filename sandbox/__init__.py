"""The sandbox platform: ``python -m driver sandbox up|down|status|reset``.

Its own distribution (``sandbox/pyproject.toml``), installed editable into the project's virtualenv
by ``scripts/install.sh``; the driver imports it only when that command is given, and its wheel does
not contain it.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository checkout the sandbox runs from: its default state folder and collections live here."""
