"""Pydantic models of a route file (DESIGN.md "Route file (contract)").

Unknown keys are rejected everywhere. Source and destination settings come from the kind
registry, so plugins get the same validation; ``route_model()`` assembles the full model.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from functools import cache
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    ValidationError,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from airflow_dataflow.config.durations import parse_duration
from airflow_dataflow.connectors.base import RESET_CURSOR_PARAM, SINCE_PARAM
from airflow_dataflow.registry import connector_kinds, destination_kinds
from airflow_dataflow.templating import check_templates

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
DESTINATION_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]*$"
CONDITION_OPS = (
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "contains",
    "matches",
    "exists",
)
CAST_TYPES = ("int", "float", "str", "bool", "datetime")
_INTERVAL = re.compile(r"^\d+(\.\d+)?(s|m|h|d|w)$")
SCHEDULE_PRESETS = (
    "@once",
    "@continuous",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@quarterly",
    "@yearly",
    "@annually",
)

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda value: value.total_seconds(), return_type=float),
    WithJsonSchema({"type": ["string", "number"], "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d|w)?$"}),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# Paths of plain fields, indexes and wildcards are valid JSONPath by construction; checking them
# with this pattern keeps jsonpath-ng's parser (slow to build) out of DAG parsing.
_SIMPLE_PATH = re.compile(r"^\$(?:\.[A-Za-z_][A-Za-z0-9_]*|\[-?\d+\]|\[\*\]|\.\*)*$")


def _check_path(value: str) -> str:
    if _SIMPLE_PATH.match(value):
        return value
    from airflow_dataflow.routing.jsonpath import compile_path

    compile_path(value)  # raises ValueError with the parser's message
    return value


class LeafCondition(Strict):
    """``{path: $.x, <op>: value}`` with exactly one operator."""

    path: str = Field(description="JSONPath selecting the values to test, e.g. $.customer.country")
    eq: Any = None
    ne: Any = None
    gt: Any = None
    gte: Any = None
    lt: Any = None
    lte: Any = None
    in_: list[Any] | str | None = Field(default=None, alias="in")
    not_in: list[Any] | str | None = None
    contains: Any = None
    matches: str | None = None
    exists: bool | str | None = Field(
        default=None, description="true or false (or a template rendering to one)"
    )

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        return _check_path(value)

    @field_validator(
        "eq", "ne", "gt", "gte", "lt", "lte", "in_", "not_in", "contains", "matches", "exists"
    )
    @classmethod
    def _valid_templates(cls, value: Any) -> Any:
        return check_templates(value)

    @field_validator("exists")
    @classmethod
    def _exists_is_a_boolean(cls, value: bool | str | None) -> bool | str | None:
        if isinstance(value, str) and "{{" not in value:
            raise ValueError(f"exists takes true or false, not {value!r}")
        return value

    @field_validator("matches")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None and "{{" not in value:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_operator(self) -> LeafCondition:
        given = [self._op_name(name) for name in self.model_fields_set if name != "path"]
        if len(given) != 1:
            found = ", ".join(sorted(given)) or "none"
            raise ValueError(
                f"a condition needs exactly one operator of {', '.join(CONDITION_OPS)} (found: {found})"
            )
        return self

    @staticmethod
    def _op_name(field_name: str) -> str:
        return "in" if field_name == "in_" else field_name


class AllCondition(Strict):
    all: list[Condition] = Field(min_length=1)


class AnyCondition(Strict):
    any: list[Condition] = Field(min_length=1)


class NotCondition(Strict):
    not_: Condition = Field(alias="not")


def _condition_kind(value: Any) -> str:
    if isinstance(value, dict):
        for kind in ("all", "any", "not"):
            if kind in value:
                return kind
        return "leaf"
    if isinstance(value, BaseModel):
        return {AllCondition: "all", AnyCondition: "any", NotCondition: "not"}.get(
            type(value), "leaf"
        )
    return "leaf"


Condition = Annotated[
    Annotated[LeafCondition, Tag("leaf")]
    | Annotated[AllCondition, Tag("all")]
    | Annotated[AnyCondition, Tag("any")]
    | Annotated[NotCondition, Tag("not")],
    Discriminator(_condition_kind),
]

AllCondition.model_rebuild()
AnyCondition.model_rebuild()
NotCondition.model_rebuild()


class TransformStep(Strict):
    """One transformation step: exactly one of select, set, rename, drop, cast."""

    select: dict[str, str] | None = None
    set: dict[str, Any] | None = None
    rename: dict[str, str] | None = None
    drop: list[str] | None = None
    cast: dict[str, Literal["int", "float", "str", "bool", "datetime"]] | None = None

    @field_validator("set")
    @classmethod
    def _valid_templates(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_templates(value)

    @field_validator("select")
    @classmethod
    def _valid_paths(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for path in (value or {}).values():
            _check_path(path)
        return value

    @model_validator(mode="after")
    def _one_step(self) -> TransformStep:
        if len(self.model_fields_set) != 1:
            found = ", ".join(sorted(self.model_fields_set)) or "none"
            raise ValueError(
                f"a transform step has exactly one of select, set, rename, drop, cast (found: {found})"
            )
        return self


class Rule(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Unique rule name (letters, digits, _ . -)")
    priority: int = Field(default=0, description="Higher first; ties keep file order")
    when: Condition | None = Field(
        default=None, description="Omitted: the rule matches every record"
    )
    transform: list[TransformStep] = Field(default_factory=list)
    to: list[str] = Field(description="Destination names that receive the matched records")


class ParamSpec(Strict):
    """An Airflow Param: its default and JSON-Schema keywords."""

    model_config = ConfigDict(extra="allow")
    default: Any = None
    type: str | list[str] | None = None
    description: str | None = None


class ScheduleAsset(Strict):
    """``{asset: NAME}`` or ``{asset: [NAMES], match: all|any}``: run on Asset updates."""

    asset: str | list[Annotated[str, Field(min_length=1)]] = Field(
        description="an Asset name, or a URI such as dataflow://<route>/<destination> (another "
        "route's output); or a list of them",
    )
    match: Literal["all", "any"] = Field(
        default="all",
        description="with a list: run when every Asset was updated (all) or any one (any)",
    )

    @field_validator("asset")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("an asset name cannot be empty")
        if isinstance(value, list) and not value:
            raise ValueError("give at least one asset")
        return value


ScheduleWebhook = dict[Literal["webhook"], str]


class RouteBase(Strict):
    """Keys every route has; ``route_model()`` adds the registry-driven ``source``/``destinations``."""

    route: str | None = Field(default=None, pattern=NAME_PATTERN, description="DAG id override")
    description: str | None = None
    schedule: str | ScheduleAsset | ScheduleWebhook | None = Field(
        default=None,
        description='cron, preset ("@hourly"), an interval ("30m", "6h", "1d"), null (API '
        "only), {asset: NAME} or {asset: [NAMES], match: all|any}, {webhook: NAME}",
    )
    start_date: date | datetime | None = None
    catchup: bool = False
    tags: list[str] = Field(default_factory=list)
    params: dict[str, ParamSpec | Any] = Field(default_factory=dict)
    retries: int = Field(default=0, ge=0)
    retry_delay: Duration = Field(default=timedelta(minutes=5))
    rules: list[Rule] = Field(default_factory=list)
    mode: Literal["all", "first"] = "all"
    unmatched: list[str] = Field(default_factory=list)
    on_dead_letter: Literal["continue", "fail"] = "continue"

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            check_schedule(value)
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _param_specs(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            name: ParamSpec.model_validate(spec) if _is_param_spec(spec) else spec
            for name, spec in value.items()
        }

    @model_validator(mode="after")
    def _cursor_params(self) -> RouteBase:
        """A source with a cursor gives the route the params ``reset_cursor`` and ``since``.

        They are added here, once, so the DAG's Params, ``param_defaults()`` (test-route,
        validate) and the trigger form agree; a route defining them itself is refused.
        """
        source = getattr(self, "source", None)
        if source is None or source.cursor_spec() is None:
            return self
        taken = [name for name in CURSOR_PARAMS if name in self.params]
        if taken:
            raise ValidationError.from_exception_data(
                "RouteConfig", [_reserved_param(name, self.params[name]) for name in taken]
            )
        self.params = {**self.params, **CURSOR_PARAMS}
        return self

    def param_defaults(self, *, with_value_only: bool = False) -> dict[str, Any]:
        """Each param's default (``with_value_only``: leave out typed params without one)."""
        return {
            name: spec.default if isinstance(spec, ParamSpec) else spec
            for name, spec in self.params.items()
            if not (with_value_only and isinstance(spec, ParamSpec) and spec.default is None)
        }


CURSOR_PARAMS: dict[str, ParamSpec] = {
    RESET_CURSOR_PARAM: ParamSpec(
        default=False,
        type="boolean",
        description="Re-read from source.cursor.initial instead of the committed cursor",
    ),
    SINCE_PARAM: ParamSpec(
        default=None,
        type=["null", "string", "number"],
        description="Re-read rows whose cursor column is greater than this value (backfill)",
    ),
}


def _reserved_param(name: str, value: Any) -> InitErrorDetails:
    message = (
        "the param {name} is reserved: the source has a cursor, so the route gets the params "
        f"{RESET_CURSOR_PARAM} and {SINCE_PARAM} (re-reading from initial or from a given "
        "value); rename this one"
    )
    error = PydanticCustomError("reserved_param", message, {"name": name})
    return InitErrorDetails(type=error, loc=("params", name), input=value)


def _is_param_spec(value: Any) -> bool:
    return isinstance(value, dict) and ("default" in value or "type" in value)


def check_schedule(value: str) -> None:
    """Raise ValueError unless ``value`` is a preset, a cron expression or an interval."""
    if schedule_interval(value) is not None:
        return
    if value.startswith("@"):
        if value not in SCHEDULE_PRESETS:
            raise ValueError(
                f"unknown schedule preset {value!r}; known: {', '.join(SCHEDULE_PRESETS)}"
            )
        return
    from croniter import croniter

    if not croniter.is_valid(value):
        raise ValueError(
            f"invalid cron expression {value!r}: expected 5 fields "
            "(minute hour day-of-month month day-of-week), a preset like @daily or an "
            "interval like 30m, 6h, 1d"
        )


def schedule_interval(value: str) -> timedelta | None:
    """The interval a schedule like ``30m``, ``6h`` or ``1d`` names (``None``: not one)."""
    if not _INTERVAL.match(value):
        return None
    interval = parse_duration(value)
    if interval <= timedelta(0):
        raise ValueError(f"schedule interval {value!r} must be longer than zero")
    return interval


def _tagged_union(kinds: dict[str, Any]) -> Any:
    members = [Annotated[cls.settings_model, Tag(name)] for name, cls in kinds.items()]
    if not members:
        raise RuntimeError("no kinds registered: is airflow-dataflow installed (pip install -e .)?")
    return Annotated[Union[tuple(members)], Discriminator(_type_tag)]  # noqa: UP007 - built at runtime


def _type_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


@cache
def route_model() -> type[RouteBase]:
    """The full route model, with source and destination kinds from the registry."""
    from airflow_dataflow.config.waits import WaitFor

    source = _tagged_union(connector_kinds())
    destination = _tagged_union(destination_kinds())
    destination_name = Annotated[str, Field(pattern=DESTINATION_NAME_PATTERN)]
    return create_model(
        "RouteConfig",
        __base__=RouteBase,
        wait_for=(
            list[WaitFor],  # type: ignore[valid-type]
            Field(default_factory=list, description="Sensors that must succeed before extract"),
        ),
        source=(source, Field(description="Where records come from")),
        destinations=(
            dict[destination_name, destination],  # type: ignore[valid-type]
            Field(min_length=1, description="Named destinations rules deliver to"),
        ),
        dead_letter=(destination | None, Field(default=None)),  # type: ignore[operator]
    )


__all__ = [
    "CAST_TYPES",
    "CONDITION_OPS",
    "AllCondition",
    "AnyCondition",
    "Condition",
    "LeafCondition",
    "NotCondition",
    "ParamSpec",
    "RouteBase",
    "Rule",
    "TransformStep",
    "check_schedule",
    "route_model",
]
