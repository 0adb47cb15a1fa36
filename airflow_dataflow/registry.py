"""One registry of connector and destination kinds, built-ins and plugins alike.

Kinds are found through the entry-point groups ``airflow_dataflow.connectors`` and
``airflow_dataflow.destinations``. Each entry point names a class (a ``Connector`` or
``Destination`` subclass) with a ``settings_model``: a pydantic model whose ``type`` field is
a ``Literal`` of the kind's name.

A plugin that cannot be used (its import fails, it is not a proper kind, or its name is taken)
never hides the others: it is left out of the kinds and kept, with its error, for
``broken_plugins()``, the ``plugins`` command and the validator's messages. A name provided by
this package itself always wins over a plugin's; between plugins the first found on
``sys.path`` wins.
"""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

from airflow_dataflow.errors import DataflowError

log = logging.getLogger(__name__)

CONNECTOR_GROUP = "airflow_dataflow.connectors"
DESTINATION_GROUP = "airflow_dataflow.destinations"
BUILT_IN = "airflow-dataflow"

Kind = Literal["connector", "destination"]
_KIND_OF_GROUP: dict[str, Kind] = {CONNECTOR_GROUP: "connector", DESTINATION_GROUP: "destination"}


class UnknownKindError(DataflowError):
    """A route names a connector or destination type nobody registered."""


@dataclass(frozen=True, slots=True)
class Plugin:
    """One installed kind: the entry point, the distribution providing it, and its status.

    ``error`` is ``None`` when the kind loaded and is usable, else why it is not (the import
    error as ``ExceptionType: message``, or what is wrong with the class).
    """

    kind: Kind
    name: str
    entry_point: str
    distribution: str | None
    version: str | None
    error: str | None = None
    description: str | None = None

    @property
    def group(self) -> str:
        return CONNECTOR_GROUP if self.kind == "connector" else DESTINATION_GROUP

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def origin(self) -> str:
        """``dist 1.2.0`` (or ``an unknown distribution``)."""
        if self.distribution is None:
            return "an unknown distribution"
        return f"{self.distribution} {self.version}" if self.version else self.distribution

    def failure(self) -> str:
        """Why the kind cannot be used, naming the plugin: for validation and lookup errors."""
        return (
            f"{self.kind} plugin {self.name!r} from {self.origin} (entry point "
            f"{self.entry_point}) failed to load: {self.error}; fix or reinstall that package "
            "(`airflow-dataflow plugins` lists every installed kind)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
            "group": self.group,
            "status": "ok" if self.ok else "error",
            "error": self.error,
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class _Group:
    classes: dict[str, Any]
    plugins: dict[str, list[Plugin]]  # by type name: the usable one first, then the refused


@cache
def _all_entry_points() -> Any:
    """Every installed entry point, read once (scanning distributions is the slow part)."""
    return entry_points()


@cache
def _load_group(group: str) -> _Group:
    kind = _KIND_OF_GROUP[group]
    found = sorted(_all_entry_points().select(group=group), key=_built_ins_first)
    classes: dict[str, Any] = {}
    plugins: dict[str, list[Plugin]] = {}
    for entry in found:
        distribution, version = _distribution_of(entry)
        description = None
        if entry.name in classes:
            first = plugins[entry.name][0]
            error: str | None = (
                f"the type name {entry.name!r} is already provided by {first.origin} "
                f"({first.entry_point}); this one is ignored"
            )
        else:
            try:
                loaded = entry.load()
            except Exception as exc:  # a broken plugin must not hide the others
                error = f"{type(exc).__name__}: {exc}"
            else:
                error = _shape_error(loaded, entry.name, kind)
                if error is None:
                    classes[entry.name] = loaded
                    description = _first_line(loaded.__doc__)
        if error is not None:
            log.warning("cannot use %s plugin %r (%s): %s", kind, entry.name, entry.value, error)
        plugin = Plugin(kind, entry.name, entry.value, distribution, version, error, description)
        plugins.setdefault(entry.name, []).append(plugin)
    return _Group(dict(sorted(classes.items())), dict(sorted(plugins.items())))


def _built_ins_first(entry: EntryPoint) -> bool:
    """Sort key: this package's own entry points before any plugin's (stable otherwise)."""
    return _distribution_of(entry)[0] != BUILT_IN


def _distribution_of(entry: EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(entry, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _shape_error(loaded: Any, name: str, kind: Kind) -> str | None:
    """What keeps ``loaded`` from being the ``kind`` named ``name``; ``None`` when it can be."""
    from pydantic import BaseModel

    if kind == "connector":
        from airflow_dataflow.connectors.base import Connector as base
    else:
        from airflow_dataflow.destinations.base import Destination as base  # type: ignore[assignment]
    if not (isinstance(loaded, type) and issubclass(loaded, base)):
        what = (
            f"{loaded.__module__}.{loaded.__qualname__}"
            if isinstance(loaded, type)
            else repr(loaded)
        )
        return f"{what} is not a subclass of {base.__module__}.{base.__name__}"
    model = getattr(loaded, "settings_model", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return f"{loaded.__name__}.settings_model is not set to a pydantic model"
    field = model.model_fields.get("type")
    literal = None if field is None else field.annotation
    if typing.get_origin(literal) is not Literal or typing.get_args(literal) != (name,):
        return (
            f"{model.__name__}.type must be declared as Literal[{name!r}] (the entry point's "
            f"name), not {literal!r}"
        )
    return None


def _first_line(text: str | None) -> str | None:
    lines = [line.strip() for line in (text or "").strip().splitlines()]
    return lines[0] if lines and lines[0] else None


def connector_kinds() -> dict[str, Any]:
    """Every usable connector class by type name."""
    return _load_group(CONNECTOR_GROUP).classes


def destination_kinds() -> dict[str, Any]:
    """Every usable destination class by type name."""
    return _load_group(DESTINATION_GROUP).classes


def installed_plugins() -> list[Plugin]:
    """Every installed kind, usable or not: connectors, then destinations, by type name."""
    return [
        plugin
        for group in (CONNECTOR_GROUP, DESTINATION_GROUP)
        for plugins in _load_group(group).plugins.values()
        for plugin in plugins
    ]


def broken_plugins() -> list[Plugin]:
    """The installed kinds that cannot be used, each with its error."""
    return [plugin for plugin in installed_plugins() if not plugin.ok]


def broken_plugin(group: str, name: str) -> Plugin | None:
    """The broken plugin that would have provided type ``name``, when ``name`` is not usable."""
    loaded = _load_group(group)
    if name in loaded.classes:
        return None
    return next((plugin for plugin in loaded.plugins.get(name, []) if not plugin.ok), None)


def connector_class(kind: str) -> Any:
    return _lookup(CONNECTOR_GROUP, kind, "source")


def destination_class(kind: str) -> Any:
    return _lookup(DESTINATION_GROUP, kind, "destination")


def _lookup(group: str, kind: str, what: str) -> Any:
    kinds = _load_group(group).classes
    try:
        return kinds[kind]
    except KeyError:
        broken = broken_plugin(group, kind)
        if broken is not None:
            raise UnknownKindError(f"{what} type {kind!r}: {broken.failure()}") from None
        known = ", ".join(kinds) or "none installed"
        raise UnknownKindError(f"unknown {what} type {kind!r}; known: {known}") from None
