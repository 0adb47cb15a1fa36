"""Pydantic validation errors to located, readable issues ("did you mean" included)."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from airflow_dataflow.config.yaml_source import LocatedDocument, Path
from airflow_dataflow.errors import ConfigIssue
from airflow_dataflow.registry import CONNECTOR_GROUP, DESTINATION_GROUP, Plugin, broken_plugin

_UNION_TYPES = (Union, types.UnionType)


def issues_from_validation(
    error: ValidationError, document: LocatedDocument, model: type[BaseModel]
) -> list[ConfigIssue]:
    """One issue per pydantic error, at the position of the offending key."""
    found: list[ConfigIssue] = []
    seen: set[tuple[Path, str]] = set()
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        data_path = _data_path(document.value, loc)
        message = _message(item, loc, data_path, model)
        if (data_path, message) in seen:
            continue
        seen.add((data_path, message))
        found.append(document.issue(data_path, message))
    return found


def dotted(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def suggest(name: str, candidates: typing.Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when a close candidate exists, else ``""``."""
    close = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _data_path(value: Any, loc: tuple[Any, ...]) -> Path:
    """Drop the union tags pydantic puts in ``loc``, keeping only real keys and indexes."""
    path: list[str | int] = []
    for index, part in enumerate(loc):
        if index + 1 < len(loc) and loc[index + 1] == part and isinstance(part, str):
            continue  # a union tag followed by the field of the same name ("any", "any")
        if (isinstance(value, dict) and part in value) or (
            isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        ):
            value = value[part]
            path.append(part)
        elif isinstance(part, str) and part.endswith("]") and "[" in part:
            continue  # pydantic's description of a union member
        elif isinstance(value, dict) and isinstance(part, str) and part in ("in_", "not_"):
            alias = part.rstrip("_")
            if alias in value:
                value = value[alias]
                path.append(alias)
        elif not isinstance(value, dict | list):
            break
        elif isinstance(value, dict) and _is_tag_of(value, part):
            continue
        else:
            path.append(part)  # a missing key: its parent's position is used
            break
    return tuple(path)


def _is_tag_of(value: dict[str, Any], part: Any) -> bool:
    return value.get("type") == part or part in ("leaf", "all", "any", "not")


def _message(item: Any, loc: tuple[Any, ...], data_path: Path, model: type[BaseModel]) -> str:
    kind = item["type"]
    where = dotted(data_path[:-1]) if kind in ("extra_forbidden", "missing") else dotted(data_path)
    if kind == "extra_forbidden":
        key = data_path[-1] if data_path else loc[-1]
        allowed = _allowed_keys(model, loc[:-1])
        hint = suggest(str(key), allowed) if allowed else ""
        known = f" (allowed: {', '.join(sorted(allowed))})" if allowed and not hint else ""
        return f"unknown key {key!r} in {where}{hint}{known}"
    if kind == "missing":
        key = loc[-1]
        return f"{where}: required key {_alias(key)!r} is missing"
    if kind == "union_tag_invalid":
        context = item.get("ctx", {})
        tag, expected = context.get("tag"), context.get("expected_tags", "")
        broken = _broken_plugin(data_path, tag)
        if broken is not None:
            return f"{where}: type {tag!r} cannot be used: {broken.failure()}"
        options = [option.strip().strip("'") for option in str(expected).split(",")]
        return f"{where}: unknown type {tag!r}{suggest(str(tag), options)} (known: {expected})"
    if kind == "union_tag_not_found":
        return f"{where}: a 'type' key is required"
    message = str(item["msg"])
    message = message.removeprefix("Value error, ")
    return f"{where}: {message}"


def _broken_plugin(data_path: Path, tag: Any) -> Plugin | None:
    """The plugin that failed to load and would have provided ``tag`` at ``data_path``."""
    section = data_path[0] if data_path else None
    group = {
        "source": CONNECTOR_GROUP,
        "destinations": DESTINATION_GROUP,
        "dead_letter": DESTINATION_GROUP,
    }.get(str(section))
    if group is None or not isinstance(tag, str):
        return None
    return broken_plugin(group, tag)


def _alias(key: Any) -> Any:
    return {"in_": "in", "not_": "not"}.get(key, key)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [field.alias or name for name, field in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in _UNION_TYPES:
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _step(annotation: Any, part: Any) -> Any:
    for meta in getattr(annotation, "__metadata__", ()):
        if getattr(meta, "tag", None) == part:  # a tagged union member: its tag is a loc part
            return typing.get_args(annotation)[0]
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    if origin in _UNION_TYPES:
        for member in typing.get_args(annotation):
            for meta in getattr(member, "__metadata__", ()):
                if getattr(meta, "tag", None) == part:
                    return typing.get_args(member)[0]
        return None
    if origin is list and isinstance(part, int):
        return typing.get_args(annotation)[0]
    if origin is dict:
        return typing.get_args(annotation)[1]
    return None
