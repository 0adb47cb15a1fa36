"""Local paths and object-storage URLs behind one small interface.

Local paths (and ``file://`` URLs) use ``pathlib``; anything else (``s3://``, ``gs://``,
``s3://conn_id@bucket/...``) goes through Airflow's ``ObjectStoragePath``.
"""

from __future__ import annotations

import glob as globlib
import os
import posixpath
from pathlib import Path
from typing import Any

_GLOB_CHARS = frozenset("*?[")


def is_local(location: str) -> bool:
    return "://" not in location or location.startswith("file://")


def resolve(location: str) -> Any:
    """A path object for ``location``: ``pathlib.Path`` locally, else ``ObjectStoragePath``."""
    if location.startswith("file://"):
        return Path(location[len("file://") :])
    if "://" not in location:
        return Path(location).expanduser()
    from airflow.sdk import ObjectStoragePath

    _attach_fsspec_fallback(location.split("://", 1)[0])
    return ObjectStoragePath(location)


def _attach_fsspec_fallback(scheme: str) -> None:
    """Let ``ObjectStoragePath`` open schemes no Airflow provider registers (``memory://``, ...).

    ``ObjectStoragePath.open`` only knows schemes a provider registers (``s3``, ``gs``, ...);
    for any other scheme fsspec implements, attach fsspec's own filesystem once.
    """
    from airflow.sdk.io import attach, has_fs
    from airflow.sdk.io.store import _STORE_CACHE

    if scheme in _STORE_CACHE or has_fs(scheme):
        return
    import fsspec

    try:
        filesystem = fsspec.filesystem(scheme)
    except (ImportError, ValueError):
        return  # unknown scheme: Airflow's own error names it at first use
    attach(scheme, fs=filesystem)


def absolute(location: str, base_dir: str) -> str:
    """``location`` with a relative local path resolved against ``base_dir``.

    Route files name paths relative to their own folder, so examples work wherever the
    dags folder is; URLs and absolute paths are returned unchanged.
    """
    if "://" in location or not base_dir:
        return location
    expanded = os.path.expanduser(location)
    return os.path.normpath(
        expanded if os.path.isabs(expanded) else os.path.join(base_dir, expanded)
    )


def inside(location: str, base_dir: str) -> bool:
    """Whether ``location`` stays within ``base_dir`` once ``..`` and symlinks are resolved.

    Local paths compare their real paths (a symlink inside ``base_dir`` pointing elsewhere is
    outside); URLs compare scheme, bucket and normalised path. A local path is never inside a
    URL base, nor the other way round.
    """
    if is_local(location) != is_local(base_dir):
        return False
    if is_local(location):
        real = os.path.realpath(resolve(location))
        base = os.path.realpath(resolve(base_dir))
        return os.path.commonpath([real, base]) == base
    scheme, _, rest = location.partition("://")
    base_scheme, _, base_rest = base_dir.partition("://")
    if scheme != base_scheme:
        return False
    path = posixpath.normpath("/" + rest)
    base = posixpath.normpath("/" + base_rest)
    return path == base or path.startswith(base.rstrip("/") + "/")


def has_glob(location: str) -> bool:
    return any(char in location for char in _GLOB_CHARS)


def expand(location: str) -> list[Any]:
    """Every existing file ``location`` names (a path or a glob), sorted by name."""
    if not has_glob(location):
        path = resolve(location)
        return [path] if path.is_file() else []
    if is_local(location):
        pattern = str(resolve(location))
        return [
            Path(found)
            for found in sorted(globlib.glob(pattern, recursive=True))
            if os.path.isfile(found)
        ]
    scheme, rest = location.split("://", 1)
    parts = rest.split("/")
    first_glob = next(index for index, part in enumerate(parts) if has_glob(part))
    base = resolve(f"{scheme}://{'/'.join(parts[:first_glob])}")
    pattern = "/".join(parts[first_glob:])
    return sorted((found for found in base.glob(pattern) if found.is_file()), key=str)


def write_atomically(location: str, data_writer: Any) -> Any:
    """Write a file through ``data_writer(binary_file)``: temp file then rename where possible.

    Readers never see a half-written file at ``location``. Object stores write the object
    in one request, which is atomic already.
    """
    path = resolve(location)
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as handle:
                data_writer(handle)
            os.replace(temporary, path)
        finally:
            if temporary.exists():
                temporary.unlink()
        return path
    with path.open("wb") as handle:
        data_writer(handle)
    return path
