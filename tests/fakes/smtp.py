"""A real SMTP server on loopback (aiosmtpd), recording every message it accepts.

Senders at ``refused.example`` get ``553`` from MAIL FROM; recipients there ``550`` from RCPT
TO, and recipients at ``busy.example`` ``450`` (``busy_for`` times, then they are accepted).
``script_data`` queues answers to the next DATA commands (``451`` deferrals, ``554``
refusals, ``421`` closing the connection). With ``login`` the server requires AUTH (without
TLS, as a test server may).
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

REFUSED_DOMAIN = "refused.example"
BUSY_DOMAIN = "busy.example"


@dataclass
class Received:
    """One accepted message: the envelope and the parsed MIME message."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        lines = self.content.replace(b"\r\n", b"\n")  # CRLF is SMTP's, not the message's
        parsed = message_from_bytes(lines, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class Recorder:
    """The aiosmtpd handler: refuses some recipients, answers DATA from a script, records."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.rcpt_refusals: list[str] = []
        self.busy_for = 1_000_000
        self._data_script: deque[str] = deque()
        self._lock = threading.Lock()

    def script_data(self, *answers: str) -> None:
        with self._lock:
            self._data_script.extend(answers)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if address.rsplit("@", 1)[-1].lower() == REFUSED_DOMAIN:
            return f"553 5.7.1 <{address}>: sender address rejected"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        domain = address.rsplit("@", 1)[-1].lower()
        if domain == REFUSED_DOMAIN:
            self.rcpt_refusals.append(address)
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        if domain == BUSY_DOMAIN and self.busy_for > 0:
            self.busy_for -= 1
            self.rcpt_refusals.append(address)
            return f"450 4.2.1 <{address}>: mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            scripted = self._data_script.popleft() if self._data_script else None
        if scripted is not None:
            return scripted
        content = envelope.original_content or envelope.content
        with self._lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(content))
            )
        return "250 2.0.0 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return [item.message for item in self.received]


class SmtpServer:
    """aiosmtpd's ``Controller`` on 127.0.0.1 and a free port; a context manager."""

    def __init__(self, login: tuple[str, str] | None = None) -> None:
        from aiosmtpd.controller import Controller

        self.recorder = Recorder()
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.login = login
        auth: dict[str, Any] = {}
        if login is not None:
            auth = {
                "authenticator": self._authenticate,
                "auth_required": True,
                "auth_require_tls": False,
            }
        self._controller = Controller(self.recorder, hostname=self.host, port=self.port, **auth)

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        good = (
            isinstance(data, LoginPassword)
            and self.login is not None
            and (data.login.decode(), data.password.decode()) == self.login
        )
        return AuthResult(success=good, handled=False)

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    def connection(self, **extra: Any) -> dict[str, Any]:
        """An Airflow ``smtp`` connection (JSON form) to this server: plain SMTP."""
        conn: dict[str, Any] = {
            "conn_type": "smtp",
            "host": self.host,
            "port": self.port,
            "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 10, **extra},
        }
        if self.login is not None:
            conn["login"], conn["password"] = self.login
        return conn


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
