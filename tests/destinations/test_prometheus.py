"""The ``prometheus`` destination, against Debian's real ``prometheus-pushgateway``.

Settings are checked at load time (metric and label names); aggregation is plain Python;
delivery goes through the pipeline's ``deliver`` (the ledger) to a real Pushgateway started
per test, whose ``/metrics`` is scraped and parsed (``tests/support/pushgateway.py``). Faults:
a process killed right after its push (SIGKILL, in a subprocess), an unreachable gateway, a
gateway refusing inconsistent metrics, and a local HTTP server answering 503/401.
"""

from __future__ import annotations

import http.server
import json
import logging
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_dataflow.config import load_route_text
from airflow_dataflow.destinations import prometheus
from airflow_dataflow.destinations.prometheus import (
    MetricSpec,
    PrometheusDestination,
    PrometheusDestinationSettings,
    RecordMetrics,
)
from airflow_dataflow.errors import DestinationError, RetriableError, RouteConfigError
from airflow_dataflow.operators import metrics as operational
from airflow_dataflow.pipeline.deliver import deliver
from airflow_dataflow.state.ledger import ledger_entries
from airflow_dataflow.state.migrate import state_engine
from tests.support.cli import run_cli
from tests.support.faults import deliver_and_get_killed, record_waits
from tests.support.pushgateway import Pushgateway, pushgateway_fixture  # noqa: F401
from tests.support.routes import stage_partition, write_route

RECORDS = 1000
COUNTRIES = ["DE", "FR", "IT", "US"]

METRICS = """
      - {name: order_amount_last, type: gauge, value: $.amount, labels: {country: $.country}}
      - {name: orders, type: counter, labels: {country: $.country}}
      - {name: revenue, type: counter, value: $.amount}
      - {name: order_amount, type: histogram, value: $.amount, buckets: [10, 50]}
      - {name: order_amount_summary, type: summary, value: $.amount}
"""


@pytest.fixture(autouse=True)
def _no_operational_gateway(own_state_store: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own state store, and no gateway for operational metrics unless set."""
    monkeypatch.delenv(operational.ENV_VAR, raising=False)


def _order(n: int) -> dict[str, Any]:
    """Order ``n``: every 97th has no number (a dead letter); amounts as numbers or strings."""
    amount: Any = n % 70
    if n % 97 == 13:
        amount = "n/a"
    elif n % 3 == 0:
        amount = str(amount)  # numeric strings are numbers
    return {"id": n, "amount": amount, "country": COUNTRIES[n % len(COUNTRIES)]}


def _expected(orders: list[dict[str, Any]]) -> dict[str, float]:
    """The series the orders give, computed independently of the destination."""
    good = [o for o in orders if o["amount"] != "n/a"]
    series: dict[str, float] = {}
    for order in good:
        series[f'order_amount_last{{country="{order["country"]}"}}'] = float(order["amount"])
    for country in {o["country"] for o in good}:
        series[f'orders_total{{country="{country}"}}'] = sum(
            1 for o in good if o["country"] == country
        )
    amounts = [float(o["amount"]) for o in good]
    series["revenue_total"] = sum(amounts)
    for bound, label in ((10, "10"), (50, "50"), (float("inf"), "+Inf")):  # as Go prints them
        series[f'order_amount_bucket{{le="{label}"}}'] = sum(1 for a in amounts if a <= bound)
    series["order_amount_sum"] = series["order_amount_summary_sum"] = sum(amounts)
    series["order_amount_count"] = series["order_amount_summary_count"] = len(amounts)
    return series


def _destination(gateway: str, metrics: str = METRICS, extra: str = "") -> str:
    return f"""
        type: prometheus
        url: {gateway}
        job: shop{extra}
        metrics:{textwrap.indent(textwrap.dedent(metrics), " " * 10)}"""


def _settings(**values: Any) -> PrometheusDestinationSettings:
    return PrometheusDestinationSettings.model_validate(
        {"type": "prometheus", "url": "http://127.0.0.1:9", **values}
    )


# -- settings: checked when the route is loaded (so by `validate`) -----------------------------

ROUTE_WITH = """
source: {{type: file, path: in.jsonl}}
rules: [{{name: all, to: [m]}}]
destinations:
  m:
    type: prometheus
    {gateway}
    metrics:
{metrics}
"""


def _load(metrics: str, gateway: str = "url: http://pushgateway:9091") -> Any:
    return load_route_text(
        ROUTE_WITH.format(gateway=gateway, metrics=textwrap.indent(metrics, " " * 6)),
        "m.route.yaml",
    )


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ("- {name: orders-total, type: counter}", "'orders-total' is not a valid Prometheus name"),
        ("- {name: 1st_orders, type: counter}", "not a valid Prometheus name"),
        ("- {name: 'orders:rate', type: counter}", "colons are for recording rules"),
        ("- {name: __orders, type: counter}", "names starting with __ are reserved"),
        ("- {name: dataflow_orders, type: counter}", "'dataflow_orders' is reserved"),
        ("- {name: push_time_seconds, type: gauge, value: $.a}", "is reserved"),
        ("- {name: o, type: counter, labels: {job: $.j}}", "label name 'job' is reserved"),
        ("- {name: o, type: counter, labels: {route: $.r}}", "label name 'route' is reserved"),
        ("- {name: o, type: counter, labels: {__x: $.x}}", "names starting with __ are reserved"),
        ("- {name: o, type: counter, labels: {bad-label: $.x}}", "'bad-label' is not a valid"),
        ("- {name: o, type: histogram, value: $.a, labels: {le: $.x}}", "label 'le' is reserved"),
        ("- {name: o, type: summary, value: $.a, labels: {quantile: $.x}}", "'quantile' is"),
        ("- {name: o, type: gauge}", "a gauge needs `value`"),
        ("- {name: o, type: gauge, value: '$.a[?'}", "invalid JSONPath"),
        ("- {name: o, type: counter, labels: {c: '$..['}}", "invalid JSONPath"),
        ("- {name: o, type: gauge, value: $.a, buckets: [1]}", "for histograms only"),
        ("- {name: o, type: histogram, value: $.a, buckets: [5, 1]}", "strictly increasing"),
        ("- {name: o, type: timer, value: $.a}", "type"),
        ("- {name: o, type: counter, unit: s}", "unit"),
        (
            "- {name: latency, type: histogram, value: $.a}\n"
            "- {name: latency_count, type: gauge, value: $.a}",
            "metrics 'latency' and 'latency_count' both expose 'latency_count'",
        ),
        (
            "- {name: orders, type: counter}\n- {name: orders_total, type: counter}",
            "both expose",
        ),
        ("- {name: o, type: counter}\n- {name: o, type: gauge, value: $.a}", "both expose 'o'"),
    ],
)
def test_bad_metrics_are_refused_at_load_time(metrics: str, message: str) -> None:
    with pytest.raises(RouteConfigError) as caught:
        _load(metrics)
    assert message in str(caught.value)
    assert all(issue.line > 1 for issue in caught.value.issues)  # located in the file


@pytest.mark.parametrize(
    ("gateway", "message"),
    [
        ("job: shop", "give exactly one of `connection` and `url`"),
        ("url: http://g:9091\n    connection: pg", "give exactly one"),
        ("url: ftp://g:21", "must be an http:// or https:// URL"),
        ("url: 'http://user:secret@g:9091'", "must not carry credentials"),
        ("url: 'http://g:9091/?x=1'", "no query string"),
        ("url: http://g:9091\n    job: airflow_dataflow", "reserved for the route's operational"),
    ],
)
def test_bad_gateway_settings_are_refused(gateway: str, message: str) -> None:
    with pytest.raises(RouteConfigError) as caught:
        _load("- {name: orders, type: counter}", gateway)
    assert message in str(caught.value)


def test_good_metrics_load() -> None:
    route = _load(textwrap.dedent(METRICS).strip())
    settings = route.config.destinations["m"]
    assert [metric.type for metric in settings.metrics] == [
        "gauge",
        "counter",
        "counter",
        "histogram",
        "summary",
    ]
    assert settings.job is None and settings.url == "http://pushgateway:9091"


def test_validate_reports_a_bad_metric_name_at_its_line(tmp_path: Path) -> None:
    route = write_route(
        tmp_path,
        "orders",
        ROUTE_WITH.format(
            gateway="url: http://pushgateway:9091",
            metrics="      - {name: order-amount, type: gauge, value: $.amount}",
        ),
    )
    result = run_cli("validate", str(route), env={"AIRFLOW__CORE__UNIT_TEST_MODE": "False"})
    assert result.returncode == 1, result.output
    assert f"{route}:8:" in result.stdout + result.stderr
    assert "'order-amount' is not a valid Prometheus name" in result.output


# -- aggregation: records to series (no network) -----------------------------------------------


def _metrics(*specs: dict[str, Any]) -> RecordMetrics:
    return RecordMetrics([MetricSpec.model_validate(spec) for spec in specs], "orders")


def _samples(metrics: RecordMetrics) -> dict[str, float]:
    """What the registry exposes, keyed like ``Pushgateway.series``."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(metrics.registry()).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return found


def test_gauge_keeps_the_last_value_counter_sums_histogram_and_summary_observe() -> None:
    metrics = _metrics(
        {"name": "last", "type": "gauge", "value": "$.v", "labels": {"k": "$.k"}},
        {"name": "seen", "type": "counter", "labels": {"k": "$.k"}},
        {"name": "amount", "type": "counter", "value": "$.v"},
        {"name": "h", "type": "histogram", "value": "$.v", "buckets": [1, 5]},
        {"name": "s", "type": "summary", "value": "$.v"},
    )
    for record in [{"k": "a", "v": 1}, {"k": "a", "v": "4.5"}, {"k": "b", "v": 10}]:
        assert metrics.add(record) is None
    assert _samples(metrics) == {
        'last{k="a"}': 4.5,
        'last{k="b"}': 10.0,
        'seen_total{k="a"}': 2.0,
        'seen_total{k="b"}': 1.0,
        "amount_total": 15.5,
        'h_bucket{le="1.0"}': 1.0,
        'h_bucket{le="5.0"}': 2.0,
        'h_bucket{le="+Inf"}': 3.0,
        "h_count": 3.0,
        "h_sum": 15.5,
        "s_count": 3.0,
        "s_sum": 15.5,
    }


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"k": "a"}, "metric 'g': no value at $.v"),
        ({"k": "a", "v": None}, "metric 'g': no value at $.v"),
        ({"k": "a", "v": "n/a"}, "metric 'g': the value at $.v is 'n/a', not a number"),
        ({"k": "a", "v": True}, "the value at $.v is True, not a number"),
        ({"k": "a", "v": {"x": 1}}, "not a number"),
        ({"k": "a", "v": "nan"}, "not a number"),
        ({"k": ["a", "b"], "v": 1}, "label 'k' at $.k is an array"),
        ({"k": {"x": 1}, "v": 1}, "label 'k' at $.k is an object"),
        ({"k": "a", "v": 1, "c": -2}, "metric 'c': counter value -2 at $.c is negative"),
    ],
)
def test_a_record_without_a_usable_value_is_refused_whole(
    record: dict[str, Any], reason: str
) -> None:
    metrics = _metrics(
        {"name": "seen", "type": "counter"},  # first: proves nothing is added on refusal
        {"name": "g", "type": "gauge", "value": "$.v", "labels": {"k": "$.k"}},
        {"name": "c", "type": "counter", "value": "$.c"},
    )
    record.setdefault("c", 1)
    refused = metrics.add(record)
    assert refused is not None and reason in refused
    assert _samples(metrics) == {}  # no series at all: the record added to no metric


def test_several_values_are_refused() -> None:
    metrics = _metrics({"name": "g", "type": "gauge", "value": "$.items[*].price"})
    assert metrics.add({"items": [{"price": 1}]}) is None
    reason = metrics.add({"items": [{"price": 1}, {"price": 2}]})
    assert reason == "metric 'g': value path $.items[*].price selects 2 values, not one"


def test_label_values_are_data() -> None:
    metrics = _metrics({"name": "n", "type": "counter", "labels": {"l": "$.l"}})
    for value in ["{{ 7*7 }}", 3, 2.5, True, None]:
        assert metrics.add({"l": value}) is None
    assert metrics.add({}) is None  # a missing label is an empty one, like null
    assert _samples(metrics) == {
        'n_total{l="{{ 7*7 }}"}': 1.0,
        'n_total{l="3"}': 1.0,
        'n_total{l="2.5"}': 1.0,
        'n_total{l="true"}': 1.0,
        'n_total{l=""}': 2.0,  # an empty label: Prometheus reads it as no label
    }


# -- delivery through the ledger, to a real Pushgateway ----------------------------------------


def test_a_run_is_one_push_of_the_group(tmp_path: Path, pushgateway: Pushgateway) -> None:
    from airflow_dataflow.state.store import StateStore

    orders = [_order(n) for n in range(RECORDS)]
    route, context, partition = stage_partition(
        tmp_path, _destination(pushgateway.url), "run-1", orders
    )
    outcome = deliver(route, "out", context, partition)
    bad = [o for o in orders if o["amount"] == "n/a"]
    assert (outcome["delivered"], outcome["rejected"]) == (RECORDS - len(bad), len(bad))
    assert outcome["batches"] == 1  # the whole delivery: one ledger entry
    assert outcome["locations"] == [f"{pushgateway.url}/metrics/job/shop/route/orders"]
    assert pushgateway.series("shop", "orders") == _expected(orders)
    assert pushgateway.groups() == {("shop", "orders")}
    letters = StateStore.open().dead_letters("orders")
    assert sorted(letter["record"]["id"] for letter in letters) == [o["id"] for o in bad]
    assert letters[0]["reason"] == (
        "metric 'order_amount_last': the value at $.amount is 'n/a', not a number"
    )
    # the task's retry: skipped as delivered, same counts, nothing pushed twice
    again = deliver(route, "out", context, partition)
    assert (again["delivered"], again["rejected"], again["skipped"]) == (
        RECORDS - len(bad),
        len(bad),
        1,
    )
    assert pushgateway.series("shop", "orders") == _expected(orders)


def test_the_push_replaces_the_group_so_stale_series_disappear(
    tmp_path: Path, pushgateway: Pushgateway
) -> None:
    destination = _destination(pushgateway.url)
    first = [_order(n) for n in range(20)]
    route, context, partition = stage_partition(tmp_path, destination, "run-1", first)
    deliver(route, "out", context, partition)
    assert 'orders_total{country="US"}' in pushgateway.series("shop", "orders")
    second = [o for o in (_order(n) for n in range(20, 40)) if o["country"] != "US"]
    route, context, partition = stage_partition(tmp_path, destination, "run-2", second)
    deliver(route, "out", context, partition)
    series = pushgateway.series("shop", "orders")
    assert series == _expected(second)
    assert not any('country="US"' in key for key in series)


def test_record_values_are_pushed_literally(tmp_path: Path, pushgateway: Pushgateway) -> None:
    orders = [{"amount": 5, "country": "{{ 7*7 }}"}, {"amount": 6, "country": "{% raw %}"}]
    metrics = "\n- {name: amount, type: gauge, value: $.amount, labels: {country: $.country}}"
    route, context, partition = stage_partition(
        tmp_path, _destination(pushgateway.url, metrics), "r", orders
    )
    deliver(route, "out", context, partition)
    assert pushgateway.series("shop", "orders") == {
        'amount{country="{{ 7*7 }}"}': 5.0,
        'amount{country="{% raw %}"}': 6.0,
    }


def test_the_gateway_from_an_airflow_http_connection(
    tmp_path: Path, pushgateway: Pushgateway, define_conn: Callable[..., str]
) -> None:
    host_port = pushgateway.url.removeprefix("http://")
    conn_id = define_conn(
        json.dumps(
            {
                "conn_type": "http",
                "host": host_port.split(":")[0],
                "port": int(host_port.split(":")[1]),
            }
        )
    )
    destination = _destination(pushgateway.url).replace(
        f"url: {pushgateway.url}", f"connection: {conn_id}"
    )
    orders = [_order(n) for n in range(10)]
    route, context, partition = stage_partition(tmp_path, destination, "run-1", orders)
    deliver(route, "out", context, partition)
    assert pushgateway.series("shop", "orders") == _expected(orders)


def test_an_undefined_connection_says_how_to_define_it(tmp_path: Path) -> None:
    destination = _destination("http://x").replace("url: http://x", "connection: no_such_gw")
    route, context, partition = stage_partition(tmp_path, destination, "run-1", [_order(1)])
    with pytest.raises(DestinationError) as caught:
        deliver(route, "out", context, partition)
    assert "route 'orders': destination 'out'" in str(caught.value)
    assert "AIRFLOW_CONN_NO_SUCH_GW" in str(caught.value)


# -- a process killed right after its push -----------------------------------------------------


def test_killed_after_the_push_the_retry_pushes_the_same_group(
    tmp_path: Path, pushgateway: Pushgateway
) -> None:
    orders = [_order(n) for n in range(RECORDS)]
    route, context, partition = stage_partition(
        tmp_path, _destination(pushgateway.url), "run-1", orders
    )
    deliver_and_get_killed(route, context, partition, target="prometheus:Pushgateway.push", after=1)
    assert pushgateway.series("shop", "orders") == _expected(orders)  # the push arrived
    entries = ledger_entries(state_engine(), "orders")
    assert [entry["status"] for entry in entries] == ["sending"]  # the ledger never heard
    outcome = deliver(route, "out", context, partition)  # the task's retry
    bad = sum(1 for o in orders if o["amount"] == "n/a")
    assert (outcome["delivered"], outcome["rejected"], outcome["skipped"]) == (
        RECORDS - bad,
        bad,
        0,
    )
    # pushed twice, exposed once: each series once, counters and histograms not doubled
    assert pushgateway.series("shop", "orders") == _expected(orders)
    assert [entry["status"] for entry in ledger_entries(state_engine(), "orders")] == ["delivered"]


# -- failures ------------------------------------------------------------------------------------


def _no_wait(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retries without sleeping; returns the waits the policy asked for."""
    return record_waits(monkeypatch, PrometheusDestination)


def test_an_unreachable_gateway_is_retried_then_fails_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits = _no_wait(monkeypatch)
    from tests.support.pushgateway import _free_port

    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens
    route, context, partition = stage_partition(
        tmp_path, _destination(url) + "\n        max_attempts: 3", "run-1", [_order(1)]
    )
    with pytest.raises(RetriableError) as caught:
        deliver(route, "out", context, partition)
    message = str(caught.value)
    assert "route 'orders': destination 'out': cannot reach the Pushgateway at " + url in message
    assert "gave up after 3 attempts" in message
    assert len(waits) == 2
    assert [e["status"] for e in ledger_entries(state_engine(), "orders")] == ["failed"]


def test_metrics_inconsistent_with_another_group_fail_without_retries(
    tmp_path: Path, pushgateway: Pushgateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real gateway answers 400 when a name has two types: retrying cannot help."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    waits = _no_wait(monkeypatch)
    registry = CollectorRegistry()
    Gauge("order_amount", "a gauge elsewhere", registry=registry).set(1)
    push_to_gateway(pushgateway.url, job="other", registry=registry)
    route, context, partition = stage_partition(
        tmp_path, _destination(pushgateway.url), "run-1", [_order(n) for n in range(5)]
    )
    with pytest.raises(DestinationError) as caught:
        deliver(route, "out", context, partition)
    assert not isinstance(caught.value, RetriableError)
    assert waits == []
    assert f"destination 'out': the Pushgateway at {pushgateway.url} answered 400" in str(
        caught.value
    )
    assert pushgateway.series("shop", "orders") == {}


class _Answers(http.server.BaseHTTPRequestHandler):
    """Answers pushes from a script: (status, headers) per request; records the requests."""

    script: list[tuple[int, dict[str, str]]] = []
    seen: list[dict[str, str]] = []

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append(dict(self.headers))
        status, headers = type(self).script.pop(0) if type(self).script else (200, {})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"nope")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def answers() -> Iterator[tuple[str, type[_Answers]]]:
    handler = type("Answers", (_Answers,), {"script": [], "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_a_503_is_retried_after_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answers: tuple[str, type[_Answers]]
) -> None:
    url, handler = answers
    handler.script = [(503, {"Retry-After": "7"}), (429, {"Retry-After": "2"})]
    waits = _no_wait(monkeypatch)
    route, context, partition = stage_partition(tmp_path, _destination(url), "run-1", [_order(1)])
    assert deliver(route, "out", context, partition)["delivered"] == 1
    assert waits == [7.0, 2.0]
    assert len(handler.seen) == 3


def test_basic_auth_from_the_connection_and_the_password_is_masked(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    answers: tuple[str, type[_Answers]],
    define_conn: Callable[..., str],
) -> None:
    url, handler = answers
    masked: list[str] = []
    monkeypatch.setattr("airflow.sdk.log.mask_secret", masked.append)
    conn_id = define_conn(url.replace("http://", "http://pusher:s3cr%2Ft@"))
    destination = _destination(url).replace(f"url: {url}", f"connection: {conn_id}")
    route, context, partition = stage_partition(tmp_path, destination, "run-1", [_order(1)])
    deliver(route, "out", context, partition)
    assert handler.seen[0]["Authorization"] == "Basic cHVzaGVyOnMzY3IvdA=="  # pusher:s3cr/t
    assert "s3cr/t" in masked
    handler.script = [(401, {})]
    route, context, partition = stage_partition(tmp_path, destination, "run-2", [_order(2)])
    with pytest.raises(DestinationError) as caught:
        deliver(route, "out", context, partition)
    assert "answered 401" in str(caught.value)
    assert "check the login and password" in str(caught.value)
    assert "s3cr" not in str(caught.value)


def test_rate_limit_paces_the_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answers: tuple[str, type[_Answers]]
) -> None:
    url, _ = answers
    rates: list[float | None] = []
    original = prometheus.RateLimiter.acquire

    def acquire(self: prometheus.RateLimiter, tokens: float = 1.0) -> float:
        rates.append(self.rate)
        return original(self, tokens)

    monkeypatch.setattr(prometheus.RateLimiter, "acquire", acquire)
    destination = _destination(url) + "\n        rate_limit: 0.5"
    route, context, partition = stage_partition(tmp_path, destination, "run-1", [_order(1)])
    deliver(route, "out", context, partition)
    assert rates == [0.5]


# -- the route's operational metrics -------------------------------------------------------------


def _summary(**counts: Any) -> dict[str, Any]:
    base = {
        "read": 10,
        "matched": 8,
        "unmatched": 1,
        "dead_lettered": 1,
        "rules": {"all": 8},
        "destinations": {"out": 7},
        "routed": {"out": 8},
        "held_back": {},
        "rejected": {"out": 1},
    }
    return {"counts": {**base, **counts}, "warnings": ["one"]}


def test_operational_metrics_go_to_their_own_group(
    tmp_path: Path, pushgateway: Pushgateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record metrics' group and the operational group coexist; neither erases the other."""
    orders = [_order(n) for n in range(20)]
    route, context, partition = stage_partition(
        tmp_path, _destination(pushgateway.url), "run-1", orders
    )
    deliver(route, "out", context, partition)
    monkeypatch.setenv(operational.ENV_VAR, pushgateway.url)
    operational.push_run_metrics(route, {}, _summary())
    assert pushgateway.groups() == {("shop", "orders"), ("airflow_dataflow", "orders")}
    assert pushgateway.series("shop", "orders") == _expected(orders)
    series = pushgateway.series("airflow_dataflow", "orders")
    success = series.pop("dataflow_last_success_timestamp_seconds")
    assert series == {
        "dataflow_run_records_read": 10,
        "dataflow_run_records_matched": 8,
        "dataflow_run_records_unmatched": 1,
        "dataflow_run_records_dead_lettered": 1,
        'dataflow_destination_records_routed{destination="out"}': 8,
        'dataflow_destination_records_delivered{destination="out"}': 7,
        'dataflow_destination_records_dead_lettered{destination="out"}': 1,
        'dataflow_destination_records_held_back{destination="out"}': 0,
        "dataflow_run_warnings": 1,
        "dataflow_run_failed": 0,
    }
    # a later failed run: the failure joins, the last success and the counts stay
    operational.push_failed_run_metrics("orders", {})
    series = pushgateway.series("airflow_dataflow", "orders")
    assert series["dataflow_last_success_timestamp_seconds"] == success
    assert series["dataflow_last_failure_timestamp_seconds"] >= success
    assert series["dataflow_run_failed"] == 1
    assert series["dataflow_run_records_read"] == 10
    # and the next record push leaves the operational group alone
    route, context, partition = stage_partition(
        tmp_path, _destination(pushgateway.url), "run-2", orders[:5]
    )
    deliver(route, "out", context, partition)
    assert pushgateway.series("shop", "orders") == _expected(orders[:5])
    assert pushgateway.series("airflow_dataflow", "orders")["dataflow_run_failed"] == 1


def test_the_failed_run_path_pushes_the_failure(
    tmp_path: Path, pushgateway: Pushgateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_dataflow.operators.failures import record_failed_run

    class FakeTI:
        task_id, try_number = "deliver_out", 1

        def xcom_pull(self, task_ids: str, key: str | None = None) -> Any:
            return None

    monkeypatch.setenv(operational.ENV_VAR, pushgateway.url)
    record_failed_run(
        route_id="orders",
        destinations=["out"],
        context={"ti": FakeTI(), "run_id": "r1"},
        exc=DestinationError("boom"),
    )
    series = pushgateway.series("airflow_dataflow", "orders")
    assert series["dataflow_run_failed"] == 1
    assert "dataflow_last_failure_timestamp_seconds" in series


def test_without_a_configured_gateway_nothing_is_pushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    posts: list[Any] = []
    monkeypatch.setattr(operational, "_post", lambda *args: posts.append(args))
    route, _, _ = stage_partition(tmp_path, _destination("http://g"), "run-1", [_order(1)])
    operational.push_run_metrics(route, {}, _summary())
    assert posts == [] and operational.metrics_pushgateway() is None


def test_a_failed_operational_push_only_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.support.pushgateway import _free_port

    monkeypatch.setenv(operational.ENV_VAR, f"http://pusher:hunter2@127.0.0.1:{_free_port()}")
    route, _, _ = stage_partition(tmp_path, _destination("http://g"), "run-1", [_order(1)])
    with caplog.at_level(logging.WARNING, logger=operational.__name__):
        operational.push_run_metrics(route, {}, _summary())  # does not raise
        operational.push_run_metrics(route, {}, {"counts": {}})  # a broken summary neither
    warnings = [r.getMessage() for r in caplog.records if r.name == operational.__name__]
    assert len(warnings) == 2
    assert "cannot reach the Pushgateway at http://127.0.0.1:" in warnings[0]
    assert "KeyError" in warnings[1]
    assert "hunter2" not in caplog.text
