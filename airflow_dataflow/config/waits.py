"""``wait_for:`` entries: sensors that run before ``extract``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from airflow_dataflow.config.durations import parse_duration
from airflow_dataflow.config.models import Duration
from airflow_dataflow.templating import TemplateText, check_templates


class WaitBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout: Duration = Field(
        default=timedelta(hours=1), description="Give up (fail) after this long"
    )
    poke_interval: Duration = Field(
        default=timedelta(seconds=60), description="Time between checks"
    )


class FileWait(WaitBase):
    """Waits until a path, glob or object-storage URL names at least one file."""

    type: Literal["file"]
    path: TemplateText = Field(
        description="Path (relative to the route file), glob or URL; a template"
    )


class SqlWait(WaitBase):
    """Waits until a query's first cell is truthy."""

    type: Literal["sql"]
    connection: str
    query: str
    parameters: Annotated[dict[str, Any], AfterValidator(check_templates)] = Field(
        default_factory=dict
    )


class HttpWait(WaitBase):
    """Waits until an HTTP endpoint answers 2xx."""

    type: Literal["http"]
    url: TemplateText | None = Field(
        default=None, description="the URL to call; a template (or give connection)"
    )
    connection: str | None = Field(
        default=None,
        description="an Airflow http connection: its host (scheme, port) and extra headers",
    )
    endpoint: TemplateText = Field(
        default="", description="path appended to the connection's host; a template"
    )
    method: Literal["GET", "HEAD"] = "GET"
    headers: Annotated[dict[str, str], AfterValidator(check_templates)] = Field(
        default_factory=dict, description="request headers (values may be templates)"
    )

    @model_validator(mode="after")
    def _one_target(self) -> HttpWait:
        if (self.url is None) == (self.connection is None):
            raise ValueError("give either url or connection (with endpoint), not both")
        if self.url is not None and self.endpoint:
            raise ValueError("endpoint goes with connection; put the whole address in url")
        return self


class BigQueryTableWait(WaitBase):
    """Waits until a BigQuery table exists."""

    type: Literal["bigquery_table"]
    connection: str = Field(description="an Airflow google_cloud_platform connection")
    table: TemplateText = Field(
        pattern=r"^([A-Za-z0-9_{}. -]+\.)?[A-Za-z0-9_{}. -]+\.[A-Za-z0-9_${}. -]+$",
        description="dataset.table or project.dataset.table; a template (e.g. events_{{ ds_nodash }})",
    )
    location: str | None = Field(default=None, description="the dataset's location")


def _wait_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


WaitFor = Annotated[
    Union[  # noqa: UP007
        Annotated[FileWait, Tag("file")],
        Annotated[SqlWait, Tag("sql")],
        Annotated[HttpWait, Tag("http")],
        Annotated[BigQueryTableWait, Tag("bigquery_table")],
    ],
    Discriminator(_wait_kind),
]

__all__ = [
    "BigQueryTableWait",
    "FileWait",
    "HttpWait",
    "SqlWait",
    "WaitFor",
    "parse_duration",
]
