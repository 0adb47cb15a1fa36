"""Route-file configuration: models, YAML loading with positions, defaults, schema."""

from airflow_dataflow.config.loader import (
    ROUTE_SUFFIX,
    LoadedRoute,
    collect_paths,
    find_route_files,
    load_route,
    load_route_text,
)

__all__ = [
    "ROUTE_SUFFIX",
    "LoadedRoute",
    "collect_paths",
    "find_route_files",
    "load_route",
    "load_route_text",
]
