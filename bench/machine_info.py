"""One line describing the machine a benchmark ran on, shared by the bench scripts."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
from pathlib import Path


def describe(*packages: str) -> str:
    """Cores, CPU model, OS, Python and the versions of ``packages``."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = "".join(f", {name} {metadata.version(name)}" for name in packages)
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}{versions}"
    )


def rewrite_results(out: Path, table: str, start: str, end: str) -> None:
    """Put ``table`` between the ``start`` and ``end`` markers of ``out`` (appended if absent)."""
    text = out.read_text(encoding="utf-8") if out.exists() else ""
    block = f"{start}\n{table}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    out.write_text(text, encoding="utf-8")
