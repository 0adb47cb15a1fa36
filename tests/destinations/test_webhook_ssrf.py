"""The webhook SSRF guard: refused addresses, every resolved address checked, pinned connects.

The guard is on by default; the receiver runs on 127.0.0.1, so these tests show it refusing
that receiver, and (with ``allow_private_networks``) that requests go to the address that was
resolved and checked, keeping the name in ``Host`` and in TLS (SNI, certificate check).
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_dataflow.context import RunContext
from airflow_dataflow.destinations import ssrf
from airflow_dataflow.destinations.ssrf import AddressGuard, AddressRefusedError, refusal
from airflow_dataflow.destinations.webhook import (
    WebhookDestination,
    WebhookSettings,
    WebhookUnavailableError,
)
from airflow_dataflow.errors import FatalError
from tests.fakes.webhook_receiver import WebhookReceiver, running_receiver

RECORD = {"id": 1}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver() as started:
        yield started


def _destination(**settings: Any) -> WebhookDestination:
    settings.setdefault("max_attempts", 1)
    model = WebhookSettings(type="webhook", **settings)
    return WebhookDestination("hook", model, RunContext(route="orders"))


def _resolve_as(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]) -> list[str]:
    """Make the system resolver answer ``answers[host]`` (one list per call, the last repeats)."""
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        replies = answers[host]
        return replies[min(calls.count(host), len(replies)) - 1]

    monkeypatch.setattr(ssrf, "system_resolver", resolver)
    return calls


# -- which addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("::ffff:127.0.0.1", "IPv4-mapped IPv6"),
        ("::ffff:8.8.8.8", "IPv4-mapped IPv6"),
        ("2002:7f00:1::", "loopback (embedded in IPv6)"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "private (embedded in IPv6)"),  # NAT64 of 10.0.0.1
    ],
)
def test_refused_addresses(address: str, reason: str) -> None:
    assert refusal(address) == reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(address) is None


def test_every_resolved_address_is_checked() -> None:
    guard = AddressGuard(
        allow_private_networks=False,
        resolver=lambda host, port: ["93.184.216.34", "2606:4700::1", "10.1.2.3"],
    )
    with pytest.raises(AddressRefusedError, match=r"'api.example.com' \(resolves to 10.1.2.3\)"):
        guard.addresses("api.example.com", 443)


def test_allow_private_networks_skips_the_check_only() -> None:
    guard = AddressGuard(allow_private_networks=True, resolver=lambda host, port: ["10.1.2.3"])
    assert guard.addresses("internal.example", 80) == ["10.1.2.3"]


# -- a destination refuses before connecting ------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "[::1]", "[::ffff:127.0.0.1]", "10.0.0.1", "169.254.169.254"]
)
def test_the_guard_is_on_by_default(receiver: WebhookReceiver, host: str) -> None:
    destination = _destination(url=receiver.url(host=host))
    with pytest.raises(AddressRefusedError) as caught:
        destination.deliver([[RECORD]])
    message = str(caught.value)
    assert isinstance(caught.value, FatalError)  # no retry, no task retry
    assert message.startswith("route 'orders': destination 'hook': POST http")
    assert "allow_private_networks: true" in message
    assert receiver.requests == []


def test_a_name_resolving_to_loopback_is_refused(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _resolve_as(monkeypatch, {"hooks.example.com": [["93.184.216.34", "127.0.0.1"]]})
    destination = _destination(url=receiver.url(host="hooks.example.com"))
    with pytest.raises(AddressRefusedError, match="a loopback address"):
        destination.deliver([[RECORD]])
    assert receiver.requests == []


def test_a_name_that_does_not_resolve_is_retriable() -> None:
    destination = _destination(url="https://no-such-host.invalid/hook", max_attempts=1)
    with pytest.raises(WebhookUnavailableError, match="ConnectError"):
        destination.deliver([[RECORD]])


# -- requests go to the checked address -----------------------------------------------------------


def test_the_request_goes_to_the_resolved_address_with_the_name_as_host(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a DNS rebinding attack: the name resolves to a checked address first, then elsewhere
    calls = _resolve_as(monkeypatch, {"api.example.test": [["127.0.0.1"], ["192.0.2.1"]]})
    destination = _destination(
        url=receiver.url(host="api.example.test"), allow_private_networks=True
    )
    result = destination.deliver([[{"id": 1}, {"id": 2}, {"id": 3}]])
    assert result.delivered == 3
    assert calls == ["api.example.test"]  # resolved once; every request used that answer
    assert [request.headers["host"] for request in receiver.requests] == [
        f"api.example.test:{receiver.port}"
    ] * 3


def test_the_next_address_is_tried_when_connecting_fails(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _resolve_as(monkeypatch, {"api.example.test": [["127.0.0.2", "127.0.0.1"]]})
    destination = _destination(
        url=receiver.url(host="api.example.test"), allow_private_networks=True
    )
    assert destination.deliver([[RECORD]]).delivered == 1


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_keeps_the_name_for_sni_and_the_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, define_conn: Callable[..., str]
) -> None:
    name = "api.example.test"
    cert_path, key_path = _certificate(tmp_path, name)
    server_names: list[str | None] = []
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_path, key_path)
    tls.sni_callback = lambda sock, server_name, context: server_names.append(server_name)
    _resolve_as(monkeypatch, {name: [["127.0.0.1"]]})
    with running_receiver(tls=tls) as receiver:
        conn_id = define_conn(
            json.dumps(
                {
                    "conn_type": "http",
                    "host": name,
                    "schema": "https",
                    "port": receiver.port,
                    "extra": {"verify": str(cert_path)},
                }
            ),
            "tls",
        )
        destination = _destination(connection=conn_id, url="/hook", allow_private_networks=True)
        assert destination.deliver([[RECORD]]).delivered == 1
        assert server_names == [name]
        assert receiver.requests[0].headers["host"] == f"{name}:{receiver.port}"


def test_a_certificate_for_another_name_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, define_conn: Callable[..., str]
) -> None:
    cert_path, key_path = _certificate(tmp_path, "other.example.test")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_path, key_path)
    _resolve_as(monkeypatch, {"api.example.test": [["127.0.0.1"]]})
    with running_receiver(tls=tls) as receiver:
        conn_id = define_conn(
            json.dumps(
                {
                    "conn_type": "http",
                    "host": f"https://api.example.test:{receiver.port}",
                    "extra": {"verify": str(cert_path)},
                }
            ),
            "tls",
        )
        destination = _destination(connection=conn_id, url="/hook", allow_private_networks=True)
        with pytest.raises(WebhookUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
            destination.deliver([[RECORD]])
