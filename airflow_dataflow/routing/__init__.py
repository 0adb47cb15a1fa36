"""Routing engine: conditions, transforms and the router, compiled once and evaluated per record."""

from airflow_dataflow.routing.conditions import ConditionError, compile_condition
from airflow_dataflow.routing.jsonpath import JsonPathSyntaxError, compile_path
from airflow_dataflow.routing.router import (
    DeadLetter,
    Routed,
    Router,
    RuleError,
    compile_router,
)
from airflow_dataflow.routing.transforms import (
    TransformError,
    TransformStepError,
    compile_transforms,
)

__all__ = [
    "ConditionError",
    "DeadLetter",
    "JsonPathSyntaxError",
    "Routed",
    "Router",
    "RuleError",
    "TransformError",
    "TransformStepError",
    "compile_condition",
    "compile_path",
    "compile_router",
    "compile_transforms",
]
