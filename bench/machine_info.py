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
