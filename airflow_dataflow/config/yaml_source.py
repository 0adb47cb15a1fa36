"""YAML to plain Python values, keeping the file, line and column of every node.

Uses libyaml (``yaml.CSafeLoader``) when available: parsing speed matters when a dags folder
holds a thousand route files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from airflow_dataflow.errors import ConfigIssue

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

Path = tuple[str | int, ...]
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_ENV_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    line: int
    column: int


@dataclass
class LocatedDocument:
    """A parsed YAML document: its value, where each node was, and the problems met."""

    file: str
    value: Any
    positions: dict[Path, tuple[str, int, int]] = field(default_factory=dict)  # file, line, column
    issues: list[ConfigIssue] = field(default_factory=list)

    def position_of(self, path: Path) -> Position:
        """The position of ``path`` or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            found = self.positions.get(path[:end])
            if found is not None:
                return Position(*found)
        return Position(self.file, 1, 1)

    def issue(self, path: Path, message: str) -> ConfigIssue:
        where = self.position_of(path)
        return ConfigIssue(where.file, where.line, where.column, message)


class _Builder:
    """Turns a composed node tree into Python values, recording positions by path."""

    def __init__(self, document: LocatedDocument) -> None:
        self.document = document
        self.file = document.file
        self.positions = document.positions
        self.constructor = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: Path) -> Any:
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            values = []
            for index, item in enumerate(node.value):
                self._mark(path + (index,), item)
                values.append(self.build(item, path + (index,)))
            return values
        if node.tag == _STR_TAG:  # most scalars: no constructor needed
            value = node.value
            return self._substitute_env(value, path) if "${" in value else value
        value = self.constructor.construct_object(node, deep=True)
        if isinstance(value, str) and "${" in value:
            return self._substitute_env(value, path)
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for source in sources:
                    built = self.build(source, path)
                    if isinstance(built, dict):
                        merged = {**built, **merged}
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.document.issues.append(
                    self._issue_at(key_node, "mapping keys must be scalars")
                )
                continue
            key = self.constructor.construct_object(key_node)
            if key in result:
                self.document.issues.append(
                    self._issue_at(key_node, f"duplicate key {key!r} (first defined above)")
                )
                continue
            self._mark(path + (key,), key_node)
            result[key] = self.build(value_node, path + (key,))
        for key, value in merged.items():
            result.setdefault(key, value)
        return result

    def _substitute_env(self, value: str, path: Path) -> str:
        def replace(match: re.Match[str]) -> str:
            name, default = match.group("name"), match.group("default")
            found = os.environ.get(name)
            if found is not None:
                return found
            if default is not None:
                return default
            self.document.issues.append(
                self.document.issue(
                    path,
                    f"environment variable {name} is not set "
                    f"(set it, or write ${{{name}:-default}} to give a default)",
                )
            )
            return match.group(0)

        return _ENV_REFERENCE.sub(replace, value)

    def _mark(self, path: Path, node: yaml.Node) -> None:
        mark = node.start_mark
        self.positions[path] = (self.file, mark.line + 1, mark.column + 1)

    def _issue_at(self, node: yaml.Node, message: str) -> ConfigIssue:
        mark = node.start_mark
        return ConfigIssue(self.document.file, mark.line + 1, mark.column + 1, message)


def parse_yaml(text: str, file: str) -> LocatedDocument:
    """Parse one YAML document; syntax errors become located issues, never exceptions."""
    document = LocatedDocument(file=file, value=None)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        document.issues.append(
            ConfigIssue(file, line, column, f"YAML syntax error: {problem}{context}")
        )
        return document
    except yaml.YAMLError as exc:
        document.issues.append(ConfigIssue(file, 1, 1, f"YAML error: {exc}"))
        return document
    if node is None:
        document.value = {}
        return document
    document.positions[()] = (file, node.start_mark.line + 1, node.start_mark.column + 1)
    document.value = _Builder(document).build(node, ())
    return document
