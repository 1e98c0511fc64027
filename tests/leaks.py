"""Looks for known secret values in everything a run wrote or printed, in the encodings a value
travels in: as it is, base64 (at each of the three alignments it can sit at inside a longer encoded
text) and URL-encoded."""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Iterable
from pathlib import Path


def encodings(value: str) -> set[bytes]:
    raw = value.encode()
    found = {raw, urllib.parse.quote(value, safe="").encode(), urllib.parse.quote_plus(value).encode()}
    for std in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            # The value preceded by `shift` other bytes: drop the output characters those bytes touch,
            # and the last ones, which depend on what follows.
            encoded = std(b"\0" * shift + raw)
            start = {0: 0, 1: 2, 2: 3}[shift]
            found.add(encoded[start : start + (len(raw) * 4) // 3 - 3])
    return {item for item in found if len(item) >= 8}


def leaks(values: dict[str, str], files: Iterable[Path], printed: Iterable[str] = ()) -> list[str]:
    """``NAME in WHERE`` for every planted value found; empty when nothing leaked."""
    needles = {name: encodings(value) for name, value in values.items()}
    sources: list[tuple[str, bytes]] = [(f"output #{i}", text.encode()) for i, text in enumerate(printed)]
    for path in files:
        if path.is_file() and not path.is_symlink():
            try:
                sources.append((str(path), path.read_bytes()))
            except OSError:  # gone meanwhile (a socket, a temporary file)
                continue
    return [
        f"{name} in {where}"
        for where, data in sources
        for name, forms in needles.items()
        if any(form in data for form in forms)
    ]
