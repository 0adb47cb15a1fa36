"""The ``prometheus`` destination: metrics derived from records, pushed to a Pushgateway.

Every record adds to the run's metrics (a gauge keeps the last value per label set, a counter
sums, a histogram or summary observes each value); the whole run is then ONE push that
replaces the group ``{job: <job>, route: <route id>}`` on the Pushgateway, so series the run
did not produce disappear and a retried push leaves the same group (idempotent). A record
whose value is missing or not a number is refused (dead letter with the reason).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from airflow_dataflow.config.models import _check_path
from airflow_dataflow.destinations.base import (
    DeliveryResult,
    Destination,
    DestinationSettings,
    Rejection,
    mask_in_logs,
)
from airflow_dataflow.destinations.policy import (
    RateLimiter,
    RetryPolicy,
    is_retriable_status,
    parse_retry_after,
)
from airflow_dataflow.errors import DestinationError, RetriableError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from airflow_dataflow.routing.jsonpath import PathFinder

log = logging.getLogger(__name__)

#: The job of the route's own operational metrics (``operators/metrics.py``): reserved.
OPERATIONAL_JOB = "airflow_dataflow"
#: Metric names under this prefix are the package's own (operational metrics).
RESERVED_PREFIX = "dataflow_"
#: Labels of the grouping key: the push adds them to every series.
GROUPING_LABELS = ("job", "route")
#: Series the Pushgateway adds to every group.
GATEWAY_METRICS = frozenset({"push_time_seconds", "push_failure_time_seconds"})
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
SUFFIXES = {
    "gauge": ("",),
    "counter": ("_total",),
    "histogram": ("", "_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
NAME_PATTERN = _NAME.pattern


def _check_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a valid Prometheus name: use ASCII letters, digits and _, "
            "not starting with a digit (colons are for recording rules)"
        )
    if value.startswith("__"):
        raise ValueError(f"{what} {value!r}: names starting with __ are reserved by Prometheus")
    return value


def _check_metric_name(value: str) -> str:
    _check_name(value, "metric name")
    if value.startswith(RESERVED_PREFIX) or value in GATEWAY_METRICS:
        raise ValueError(
            f"metric name {value!r} is reserved: {RESERVED_PREFIX}* are the route's operational "
            f"metrics and {', '.join(sorted(GATEWAY_METRICS))} the Pushgateway's"
        )
    return value


def _check_label_name(value: str) -> str:
    _check_name(value, "label name")
    if value in GROUPING_LABELS:
        raise ValueError(
            f"label name {value!r} is reserved: job and route are the push's grouping key, "
            "added to every series"
        )
    return value


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.username or parts.password:  # checked first: the message must not show them
        raise ValueError(
            "url must not carry credentials: use `connection:` (an Airflow http connection "
            "with login and password) instead"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url {value!r} must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError(f"url {value!r}: no query string or fragment")
    return value.rstrip("/")


MetricName = Annotated[
    str,
    AfterValidator(_check_metric_name),
    Field(json_schema_extra={"pattern": NAME_PATTERN}),
]
LabelName = Annotated[
    str, AfterValidator(_check_label_name), Field(json_schema_extra={"pattern": NAME_PATTERN})
]
JsonPath = Annotated[str, AfterValidator(_check_path)]


class MetricSpec(BaseModel):
    """One metric of the ``metrics`` list."""

    model_config = ConfigDict(extra="forbid")
    name: MetricName = Field(
        description="Prometheus metric name (a counter is exposed as <name>_total)"
    )
    type: Literal["gauge", "counter", "histogram", "summary"] = Field(
        description="gauge: last value per label set; counter: sum over the run's records; "
        "histogram, summary: every value observed"
    )
    value: JsonPath | None = Field(
        default=None,
        description="JSONPath of the number (numeric strings are numbers); a counter without "
        "value counts records",
    )
    labels: dict[LabelName, JsonPath] = Field(
        default_factory=dict, description="label name -> JSONPath of its value"
    )
    help: str | None = Field(default=None, description="the metric's HELP text")
    buckets: list[float] | None = Field(
        default=None,
        min_length=1,
        description="histogram only: upper bounds, increasing (+Inf is added); default "
        "Prometheus' default buckets",
    )

    @model_validator(mode="after")
    def _consistent(self) -> MetricSpec:
        if self.value is None and self.type != "counter":
            raise ValueError(f"metric {self.name!r}: a {self.type} needs `value` (a JSONPath)")
        if self.buckets is not None:
            if self.type != "histogram":
                raise ValueError(f"metric {self.name!r}: `buckets` is for histograms only")
            if any(not math.isfinite(b) for b in self.buckets) or any(
                b >= c for b, c in itertools.pairwise(self.buckets)
            ):
                raise ValueError(
                    f"metric {self.name!r}: buckets must be finite and strictly increasing"
                )
        reserved = {"histogram": "le", "summary": "quantile"}.get(self.type)
        if reserved in self.labels:
            raise ValueError(
                f"metric {self.name!r}: label {reserved!r} is reserved in a {self.type}"
            )
        return self

    def exposed_names(self) -> set[str]:
        """The names this metric puts in the exposition (a family and its samples)."""
        base = self.name.removesuffix("_total") if self.type == "counter" else self.name
        return {base + suffix for suffix in SUFFIXES[self.type]} | {base}


class PrometheusDestinationSettings(DestinationSettings):
    type: Literal["prometheus"]  # type: ignore[assignment]
    connection: str | None = Field(
        default=None,
        description="Airflow http connection of the Pushgateway (host, port, schema, login, "
        "password); or give `url`",
    )
    url: Annotated[str, AfterValidator(_check_url)] | None = Field(
        default=None, description="the Pushgateway's URL, e.g. http://pushgateway:9091"
    )
    job: str | None = Field(
        default=None,
        min_length=1,
        description="the job label of the pushed group (default: the destination's name)",
    )
    metrics: list[MetricSpec] = Field(min_length=1, description="the metrics derived from records")
    timeout: float = Field(default=10.0, gt=0, description="seconds per push request")
    max_attempts: int = Field(
        default=5, ge=1, description="push attempts, counting the first, before the task fails"
    )

    @model_validator(mode="after")
    def _consistent(self) -> PrometheusDestinationSettings:
        if (self.connection is None) == (self.url is None):
            raise ValueError("give exactly one of `connection` and `url` (the Pushgateway)")
        if self.job == OPERATIONAL_JOB:
            raise ValueError(
                f"job {OPERATIONAL_JOB!r} is reserved for the route's operational metrics"
            )
        owners: dict[str, str] = {}
        for metric in self.metrics:
            for name in sorted(metric.exposed_names()):
                if name in owners:
                    raise ValueError(
                        f"metrics {owners[name]!r} and {metric.name!r} both expose {name!r}; "
                        "rename one"
                    )
                owners[name] = metric.name
        return self


# -- the run's metrics, aggregated record by record (no Airflow, no network) ------------------


class _Refused(Exception):
    """A record cannot give a metric its value or labels: it goes to the dead letters."""


def _one(found: list[Any], metric: str, what: str, path: str) -> Any:
    if len(found) > 1:
        raise _Refused(f"metric {metric!r}: {what} {path} selects {len(found)} values, not one")
    return found[0] if found else None


class _Series:
    """One metric's values per label set, for one run (paths compiled once).

    Histograms keep bucket counts, sum and count per label set, summaries sum and count:
    memory grows with the label sets, never with the records.
    """

    def __init__(self, spec: MetricSpec, help_text: str) -> None:
        # imported here, not at module level: routing (jsonpath-ng) stays out of DAG parsing
        from airflow_dataflow.routing import values
        from airflow_dataflow.routing.jsonpath import compile_path

        self.values_rules = values
        self.spec = spec
        self.help = help_text
        self.find_value: PathFinder | None = compile_path(spec.value) if spec.value else None
        self.labels = [(name, path, compile_path(path)) for name, path in spec.labels.items()]
        self.bounds = [*(spec.buckets or DEFAULT_BUCKETS), math.inf]
        self.values: dict[tuple[str, ...], Any] = {}

    def read(self, record: Any) -> tuple[tuple[str, ...], float]:
        """The record's label values and number, or ``_Refused``."""
        name = self.spec.name
        labels = tuple(
            self._label_text(_one(find(record), name, "label path", path), label, path)
            for label, path, find in self.labels
        )
        if self.find_value is None:
            return labels, 1.0
        path = self.spec.value or ""
        value = self._number(_one(self.find_value(record), name, "value path", path), path)
        if self.spec.type == "counter" and value < 0:
            raise _Refused(f"metric {name!r}: counter value {value:g} at {path} is negative")
        return labels, value

    def _label_text(self, value: Any, label: str, path: str) -> str:
        if value is None:
            return ""  # an empty label is an absent one in Prometheus
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if self.values_rules.is_number(value):
            return str(value)
        kind = self.values_rules.kind_of(value)
        raise _Refused(f"metric {self.spec.name!r}: label {label!r} at {path} is an {kind}")

    def _number(self, value: Any, path: str) -> float:
        """The numeric rule of conditions: numbers, and strings that spell one."""
        if value is None:
            raise _Refused(f"metric {self.spec.name!r}: no value at {path}")
        rules = self.values_rules
        number = rules.parse_number(value) if isinstance(value, str) else value
        if not rules.is_number(number) or not math.isfinite(number):
            raise _Refused(
                f"metric {self.spec.name!r}: the value at {path} is {value!r}, not a number"
            )
        return float(number)

    def add(self, labels: tuple[str, ...], value: float) -> None:
        kind = self.spec.type
        if kind == "gauge":
            self.values[labels] = value
        elif kind == "counter":
            self.values[labels] = self.values.get(labels, 0.0) + value
        else:  # [count per bucket (histogram), sum, count]
            state = self.values.setdefault(labels, [[0] * len(self.bounds), 0.0, 0])
            if kind == "histogram":
                state[0][bisect.bisect_left(self.bounds, value)] += 1
            state[1] += value
            state[2] += 1

    def family(self) -> Metric:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            SummaryMetricFamily,
        )

        names = [name for name, _, _ in self.labels]
        kind = self.spec.type
        if kind == "gauge":
            family: Any = GaugeMetricFamily(self.spec.name, self.help, labels=names)
        elif kind == "counter":
            family = CounterMetricFamily(self.spec.name, self.help, labels=names)
        elif kind == "histogram":
            family = HistogramMetricFamily(self.spec.name, self.help, labels=names)
        else:
            family = SummaryMetricFamily(self.spec.name, self.help, labels=names)
        for labels, value in self.values.items():
            if kind in ("gauge", "counter"):
                family.add_metric(list(labels), value)
            elif kind == "histogram":
                family.add_metric(list(labels), self._buckets(value[0]), value[1])
            else:
                family.add_metric(list(labels), value[2], value[1])
        return family

    def _buckets(self, counts: list[int]) -> list[tuple[str, float]]:
        """Cumulative counts per upper bound, as the exposition format wants them."""
        from prometheus_client.utils import floatToGoString

        return [
            (floatToGoString(bound), float(total))
            for bound, total in zip(self.bounds, itertools.accumulate(counts), strict=True)
        ]


class RecordMetrics:
    """The run's metrics: each record adds to every metric, or is refused whole."""

    def __init__(self, specs: list[MetricSpec], route: str) -> None:
        self.series = [
            _Series(spec, spec.help or f"{spec.name} from route {route} (airflow-dataflow)")
            for spec in specs
        ]

    def add(self, record: Any) -> str | None:
        """Add ``record``; return why it was refused (it then adds to no metric), or ``None``."""
        try:
            readings = [series.read(record) for series in self.series]
        except _Refused as refused:
            return str(refused)
        for series, (labels, value) in zip(self.series, readings, strict=True):
            series.add(labels, value)
        return None

    def registry(self) -> CollectorRegistry:
        """A fresh registry holding exactly these metrics (nothing of the process's own)."""
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry(auto_describe=True)
        registry.register(MetricsCollector([series.family() for series in self.series]))
        return registry


@dataclass(eq=False)  # registries key collectors by identity
class MetricsCollector:
    """Hands a registry a fixed list of metric families."""

    families: list[Metric]

    def collect(self) -> Iterable[Metric]:
        return iter(self.families)


# -- the Pushgateway ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pushgateway:
    """A Pushgateway: its URL (never with credentials) and basic-auth login, if any."""

    url: str
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 10.0) -> Pushgateway:
        """From a URL that may carry ``user:password@`` (masked; kept out of ``url``)."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        bare = urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")
        mask_in_logs(parts.password)
        return cls(bare, parts.username, parts.password, timeout)

    @classmethod
    def from_connection(cls, conn_id: str, *, where: str, timeout: float = 10.0) -> Pushgateway:
        """From an Airflow http connection, read as ``HttpHook`` reads it."""
        conn = _get_connection(conn_id, where)
        if not conn.host:
            raise DestinationError(f"{where}: connection {conn_id!r} has no host (the Pushgateway)")
        url = conn.host if "://" in conn.host else f"{conn.schema or 'http'}://{conn.host}"
        if conn.port:
            url = f"{url}:{conn.port}"
        mask_in_logs(conn.password)
        return cls(url.rstrip("/"), conn.login or None, conn.password or None, timeout)

    def push(
        self,
        job: str,
        grouping_key: dict[str, str],
        registry: CollectorRegistry,
        *,
        where: str,
        replace: bool = True,
    ) -> None:
        """PUT (``replace``: the group becomes exactly ``registry``) or POST (same names only).

        Raises ``RetriableError`` for connect errors, timeouts, 408, 429 and 5xx, and
        ``DestinationError`` for other answers (a 400: metrics inconsistent with other groups).
        """
        from urllib.error import HTTPError, URLError

        from prometheus_client import push_to_gateway, pushadd_to_gateway

        send = push_to_gateway if replace else pushadd_to_gateway
        try:
            send(
                self.url,
                job=job,
                registry=registry,
                grouping_key=grouping_key,
                timeout=self.timeout,
                handler=self._handler(),
            )
        except HTTPError as exc:
            raise self._answer_error(exc, where) from None
        except (URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise RetriableError(
                f"{where}: cannot reach the Pushgateway at {self.url} ({reason}); check that it "
                "runs and the URL or connection"
            ) from None

    def _handler(self) -> Callable[..., Callable[[], None]]:
        from prometheus_client.exposition import basic_auth_handler, default_handler

        if self.login is None or self.password is None:
            return default_handler
        login, password = self.login, self.password

        def handler(
            url: str, method: str, timeout: float | None, headers: list[Any], data: bytes
        ) -> Callable[[], None]:
            return basic_auth_handler(url, method, timeout, headers, data, login, password)

        return handler

    def _answer_error(self, exc: Any, where: str) -> Exception:
        body = exc.read(500).decode("utf-8", "replace").strip() if exc.fp else ""
        message = f"{where}: the Pushgateway at {self.url} answered {exc.code} {exc.reason}"
        if body:
            message += f": {body}"
        if is_retriable_status(exc.code):
            retry_after = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            return RetriableError(message, retry_after=retry_after)
        if exc.code in (401, 403):
            message += "; check the login and password of the connection"
        return DestinationError(message)


def _get_connection(conn_id: str, where: str) -> Any:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise DestinationError(
            f"{where}: Airflow connection {conn_id!r} is not defined; define it with "
            f"`airflow connections add {conn_id} --conn-uri http://pushgateway:9091` or the "
            f"environment variable AIRFLOW_CONN_{conn_id.upper()}"
        ) from None


# -- the destination ----------------------------------------------------------------------------


class PrometheusDestination(Destination):
    """Pushes the run's record metrics to a Pushgateway, as one group replaced whole."""

    settings_model = PrometheusDestinationSettings
    settings: PrometheusDestinationSettings

    @property
    def where(self) -> str:
        return f"route {self.context.route!r}: destination {self.name!r}"

    @property
    def job(self) -> str:
        return self.settings.job or self.name

    def gateway(self) -> Pushgateway:
        if self.settings.url is not None:
            return Pushgateway(self.settings.url, timeout=self.settings.timeout)
        assert self.settings.connection is not None  # the settings require one of the two
        return Pushgateway.from_connection(
            self.settings.connection, where=self.where, timeout=self.settings.timeout
        )

    def target(self) -> str:
        """The pushed group: the gateway URL and the grouping key."""
        return f"{self.gateway().url}/metrics/job/{self.job}/route/{self.context.route}"

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.settings.max_attempts)

    def deliver(self, batches: Iterable[list[dict[str, Any]]]) -> DeliveryResult:
        metrics = RecordMetrics(self.settings.metrics, self.context.route)
        rejections: list[Rejection] = []
        delivered = 0
        for batch in batches:
            for record in batch:
                reason = metrics.add(record)
                if reason is None:
                    delivered += 1
                else:
                    rejections.append(Rejection(record, reason))
        gateway = self.gateway()
        registry = metrics.registry()
        RateLimiter(self.settings.rate_limit).acquire()
        self.retry_policy().call(
            lambda: gateway.push(
                self.job, {"route": self.context.route}, registry, where=self.where
            ),
            what=f"pushing to {gateway.url}",
        )
        log.info(
            "pushed %d metrics from %d records to %s (job %s, route %s); %d records refused",
            len(self.settings.metrics),
            delivered,
            gateway.url,
            self.job,
            self.context.route,
            len(rejections),
        )
        return DeliveryResult(delivered, [self.target()], rejections)
