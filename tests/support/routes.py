"""Helpers to write route files and their data in a temporary folder."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_route(folder: Path, name: str, text: str) -> Path:
    """Write ``<name>.route.yaml`` (dedented) under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.route.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def write_jsonl(path: Path, records: Iterable[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[Any]:
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
