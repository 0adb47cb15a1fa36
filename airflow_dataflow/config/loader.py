"""Load route files: YAML with positions, ``_defaults.yaml`` layering, validation, meaning checks."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from airflow_dataflow.config.issues import dotted, issues_from_validation, suggest
from airflow_dataflow.config.models import NAME_PATTERN, route_model
from airflow_dataflow.config.yaml_source import LocatedDocument, Path, parse_yaml
from airflow_dataflow.errors import ConfigIssue, RouteConfigError

ROUTE_SUFFIX = ".route.yaml"
_ROUTE_ID = re.compile(NAME_PATTERN)
DEFAULTS_FILE = "_defaults.yaml"


@dataclass(frozen=True)
class LoadedRoute:
    """A valid route: its id, its file and text, and the validated config."""

    route_id: str
    file: str
    text: str
    config: Any  # an instance of route_model()
    document: LocatedDocument | None = None  # positions of every key, for later checks

    @property
    def root(self) -> str:
        return os.path.dirname(self.file)


def route_id_from_file(file: str) -> str:
    name = os.path.basename(file)
    return name[: -len(ROUTE_SUFFIX)] if name.endswith(ROUTE_SUFFIX) else FsPath(name).stem


def load_route(
    file: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None
) -> LoadedRoute:
    """Load and validate one route file; raises RouteConfigError listing every issue."""
    path = str(file)
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RouteConfigError(
            [ConfigIssue(path, 1, 1, f"cannot read route file: {exc.strerror}")]
        ) from exc
    return load_route_text(text, path, root=root)


def load_route_text(
    text: str, file: str, *, root: str | os.PathLike[str] | None = None
) -> LoadedRoute:
    """Validate route-file text (``file`` names it in errors and finds its ``_defaults.yaml``)."""
    document = parse_yaml(text, file)
    if document.issues and document.value is None:
        raise RouteConfigError(document.issues)
    issues = list(document.issues)
    if not isinstance(document.value, dict):
        issues.append(
            document.issue((), "a route file must be a mapping of keys (route, source, rules, ...)")
        )
        raise RouteConfigError(issues)
    defaults = _defaults_for(os.path.dirname(os.path.abspath(file)), _root(root))
    for layer in defaults:
        issues.extend(layer.issues)
    merged = _layer(document, defaults)
    model = route_model()
    config = None
    try:
        config = model.model_validate(merged.value)
    except ValidationError as exc:
        issues.extend(issues_from_validation(exc, merged, model))
    issues.extend(check_meaning(merged))
    if issues:
        raise RouteConfigError(
            sorted(set(issues), key=lambda issue: (issue.file, issue.line, issue.column))
        )
    route_id = config.route or route_id_from_file(file)
    if not _ROUTE_ID.match(route_id):
        raise RouteConfigError(
            [
                ConfigIssue(
                    file,
                    1,
                    1,
                    f"route id {route_id!r} (from the file name) is not a valid DAG id: use letters, "
                    "digits, _ . - (rename the file, or set `route:`)",
                )
            ]
        )
    return LoadedRoute(route_id=route_id, file=file, text=text, config=config, document=merged)


def check_meaning(document: LocatedDocument) -> list[ConfigIssue]:
    """Checks that span keys: destinations named in ``to``/``unmatched`` exist, rule names unique.

    Works on the raw document so these issues are reported even when other keys are invalid.
    """
    issues: list[ConfigIssue] = []
    value = document.value
    raw_destinations = value.get("destinations")
    destinations = (
        [str(name) for name in raw_destinations] if isinstance(raw_destinations, dict) else []
    )

    def check_destinations(names: Any, path: Path) -> None:
        if not isinstance(names, list) or not isinstance(raw_destinations, dict):
            return
        for position, name in enumerate(names):
            if isinstance(name, str) and name not in destinations:
                where = path + (position,)
                issues.append(
                    document.issue(
                        where,
                        f"{dotted(where)}: unknown destination {name!r}{suggest(name, destinations)} "
                        f"(destinations: {', '.join(destinations) or 'none'})",
                    )
                )

    seen_rules: dict[str, int] = {}
    rules = value.get("rules")
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict):
            continue
        name = rule.get("name")
        if isinstance(name, str):
            if name in seen_rules:
                issues.append(
                    document.issue(
                        ("rules", index, "name"),
                        f"duplicate rule name {name!r} (also rules[{seen_rules[name]}])",
                    )
                )
            seen_rules.setdefault(name, index)
        check_destinations(rule.get("to"), ("rules", index, "to"))
    check_destinations(value.get("unmatched"), ("unmatched",))
    dead_letter = value.get("dead_letter")
    if isinstance(dead_letter, dict) and dead_letter.get("type") == "file":
        path = dead_letter.get("path")
        if isinstance(path, str) and "run_id" not in path:
            issues.append(
                document.issue(
                    ("dead_letter", "path"),
                    "dead_letter.path must name the run, e.g. "
                    '"dead/{{ run_id }}.jsonl": a fixed path would be replaced by the next '
                    "run's dead letters",
                )
            )
    return issues


def _root(root: str | os.PathLike[str] | None) -> str | None:
    return os.path.abspath(root) if root is not None else None


def _defaults_for(directory: str, root: str | None) -> list[LocatedDocument]:
    """The ``_defaults.yaml`` documents from ``root`` down to ``directory`` (nearest last)."""
    layers: list[LocatedDocument] = []
    current = directory
    while True:
        layer = _defaults_in(current)
        if layer is not None:
            layers.append(layer)
        if root is None or current == root or not current.startswith(root):
            break
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    layers.reverse()
    return layers


@lru_cache(maxsize=256)
def _defaults_cached(file: str, mtime: float) -> LocatedDocument:
    text = FsPath(file).read_text(encoding="utf-8")
    document = parse_yaml(text, file)
    if document.value is not None and not isinstance(document.value, dict):
        document.issues.append(document.issue((), "_defaults.yaml must be a mapping of route keys"))
        document.value = {}
    return document


def _defaults_in(directory: str) -> LocatedDocument | None:
    file = os.path.join(directory, DEFAULTS_FILE)
    try:
        mtime = os.stat(file).st_mtime
    except OSError:
        return None
    return _defaults_cached(file, mtime)


def _layer(document: LocatedDocument, defaults: Iterable[LocatedDocument]) -> LocatedDocument:
    """Merge defaults under the route (nearest wins, key by key, recursively for mappings)."""
    layers = [layer for layer in defaults if isinstance(layer.value, dict)] + [document]
    if len(layers) == 1:
        return document
    merged = LocatedDocument(file=document.file, value={})
    for layer in layers:
        merged.value = _deep_merge(merged.value, layer.value)
        merged.positions.update(layer.positions)
    return merged


def _deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        if "type" in base and "type" in override and base["type"] != override["type"]:
            return override  # another kind: its settings replace the default's, not merge
        result = dict(base)
        for key, value in override.items():
            result[key] = _deep_merge(base.get(key), value) if key in base else value
        return result
    return override


def find_route_files(folder: str | os.PathLike[str]) -> list[str]:
    """Every ``*.route.yaml`` under ``folder`` (honouring ``.airflowignore`` when Airflow has it)."""
    folder = os.path.abspath(folder)
    try:
        from airflow.configuration import conf

        with warnings.catch_warnings():  # moved to a private module in Airflow 3.2; same function
            warnings.simplefilter("ignore")
            from airflow.utils.file import find_path_from_directory

        syntax = conf.get("core", "DAG_IGNORE_FILE_SYNTAX", fallback="glob")
        candidates: Iterable[Any] = find_path_from_directory(folder, ".airflowignore", syntax)
    except ImportError:
        candidates = (
            os.path.join(base, name) for base, _, names in os.walk(folder) for name in names
        )
    return sorted(str(found) for found in candidates if str(found).endswith(ROUTE_SUFFIX))


def collect_paths(paths: Iterable[str]) -> list[str]:
    """Route files named by ``paths``: files as given, folders searched recursively."""
    files: list[str] = []
    for path in paths:
        files.extend(find_route_files(path) if os.path.isdir(path) else [path])
    return files
