"""The route examples of docs/destinations/slack.md and email.md, run by ``airflow-dataflow run``.

Each example runs exactly as written (the route file is the doc's YAML block); only its
connections are defined here, pointing at a Slack on loopback (tests/fakes/slack.py) and a
real SMTP server (aiosmtpd).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.slack import API_TOKEN, WEBHOOK_TOKEN, FakeSlack
from tests.fakes.smtp import SmtpServer
from tests.support.cli import CliResult, run_route
from tests.support.databases import _server_unavailable
from tests.support.routes import doc_route_example, write_jsonl

SENDER = "Dataflow <dataflow@example.com>"  # as in the page's connection


# -- slack -------------------------------------------------------------------------------------

ORDERS = [
    {"id": 7, "amount": 1200, "customer": "Ann", "status": "paid"},
    {"id": 8, "amount": 20, "customer": "Bob", "status": "paid"},
    {"id": 9, "amount": 5000, "customer": "<!channel>", "status": "paid"},
    {"id": 12, "amount": 30, "customer": "Chloé", "status": "refunded"},
    {"id": 15, "amount": 12, "customer": "Dan", "status": "refunded"},
    {"id": 19, "amount": 99, "customer": "Eve", "status": "refunded"},
]


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


def test_the_documented_slack_route_posts_messages_and_a_summary(
    dataflow: Callable[..., CliResult], tmp_path: Path, slack: FakeSlack
) -> None:
    route = tmp_path / "order_alerts.route.yaml"
    route.write_text(doc_route_example("slack.md"), encoding="utf-8")
    write_jsonl(tmp_path / "data" / "orders.jsonl", ORDERS)
    connect = dataflow.connect  # type: ignore[attr-defined]
    connect(
        "slack_api",
        json.dumps(
            {"conn_type": "slack", "password": API_TOKEN, "extra": {"base_url": slack.api_url}}
        ),
    )
    connect(
        "slack_alerts",
        json.dumps(
            {"conn_type": "slackwebhook", "password": f"{slack.url}/services/{WEBHOOK_TOKEN}"}
        ),
    )
    summary = run_route(dataflow, route)
    counts = summary["counts"]
    assert counts["destinations"] == {"big_orders": 2, "refund_summary": 3}
    assert counts["rules"] == {"big": 2, "refunds": 3}

    api = [m for m in slack.messages if m.via == "api"]
    assert [(m.channel, m.text) for m in api] == [
        ("C0ORDERS", "Big order 7: 1200 EUR from Ann"),
        ("C0ORDERS", "Big order 9: 5000 EUR from &lt;!channel&gt;"),  # no @channel from data
    ]
    assert api[0].blocks == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Big order 7*\n1200 EUR from Ann"}}
    ]
    (summary_message,) = [m for m in slack.messages if m.via == "webhook"]
    assert summary_message.text == (
        f"*3 refunds* in run {summary['run_id']}\n• 12: 30 EUR\n• 15: 12 EUR\n• 19: 99 EUR"
    )
    assert not (tmp_path / "dead").exists() or not any((tmp_path / "dead").iterdir())


# -- email -------------------------------------------------------------------------------------

INVOICES = [
    {"number": "INV-1", "name": "Ann", "email": "ann@example.com", "amount": 250, "due": "2024-06-01", "status": "issued"},
    {"number": "INV-2", "name": "Bob", "email": "bob@example.com", "amount": 40, "due": "2024-06-03", "status": "issued"},
    {"number": "INV-3", "name": "Chloé", "email": "chloe@example.com", "amount": 90, "due": "2024-04-01", "status": "overdue"},
    {"number": "INV-4", "name": "Dan", "email": "dan@example.com", "amount": 45, "due": "2024-04-15", "status": "overdue"},
]  # fmt: skip


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    try:
        server = SmtpServer()
    except ImportError as exc:
        _server_unavailable(f"aiosmtpd is not installed: {exc}")
    with server:
        yield server


def test_the_documented_email_route_mails_customers_and_finance(
    dataflow: Callable[..., CliResult], tmp_path: Path, smtp: SmtpServer
) -> None:
    route = tmp_path / "invoices.route.yaml"
    route.write_text(doc_route_example("email.md"), encoding="utf-8")
    write_jsonl(tmp_path / "data" / "invoices.jsonl", INVOICES)
    dataflow.connect("smtp_default", json.dumps(smtp.connection(from_email=SENDER)))  # type: ignore[attr-defined]
    summary = run_route(dataflow, route)
    assert summary["counts"]["destinations"] == {"customer_mail": 2, "finance_summary": 2}

    received = sorted(smtp.recorder.received, key=lambda item: item.rcpt_tos)
    to_ann, to_bob, to_finance = received
    assert to_ann.mail_from == "billing@example.com"
    assert to_ann.rcpt_tos == ["ann@example.com", "archive@example.com"]
    message = to_ann.message
    assert (message["From"], message["To"], message["Bcc"]) == (
        "Billing <billing@example.com>",
        "ann@example.com",
        None,
    )
    assert message["Subject"] == "Invoice INV-1"
    assert message.get_body(("plain",)).get_content() == (  # type: ignore[union-attr]
        "Hello Ann,\nyour invoice INV-1 of 250 EUR is due on 2024-06-01.\n"
    )
    assert "<b>INV-1</b>" in message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert to_bob.rcpt_tos == ["bob@example.com", "archive@example.com"]

    assert to_finance.rcpt_tos == ["finance@example.com", "cfo@example.com"]
    assert to_finance.mail_from == "dataflow@example.com"  # the connection's from_email
    digest = to_finance.message
    assert re.fullmatch(r"2 overdue invoices on \d{4}-\d\d-\d\d", str(digest["Subject"]))
    (attachment,) = list(digest.iter_attachments())
    assert attachment.get_filename() == "finance_summary.csv"
    assert list(csv.reader(io.StringIO(attachment.get_content()))) == [
        ["number", "name", "email", "amount", "due", "status"],
        ["INV-3", "Chloé", "chloe@example.com", "90", "2024-04-01", "overdue"],
        ["INV-4", "Dan", "dan@example.com", "45", "2024-04-15", "overdue"],
    ]
