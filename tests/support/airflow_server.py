"""A real Airflow (``airflow standalone``: api-server, scheduler, DAG processor, triggerer) on
free local ports, with its own home, SQLite metadata database and dags folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

USER = "admin"
PASSWORD = "dataflow-e2e-password"
STARTUP_SECONDS = 240


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class AirflowServer:
    home: Path
    dags: Path
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def env(self) -> dict[str, str]:
        """What the docs' shell commands need to talk to this server."""
        return {"AIRFLOW_URL": self.url, "AIRFLOW_USER": USER, "AIRFLOW_PASSWORD": PASSWORD}

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """POST ``body`` without Airflow credentials; the status and the answer's text."""
        request = urllib.request.Request(self.url + path, body, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def get_anonymous(self, path: str) -> tuple[int, str]:
        """GET without credentials; the status and the answer's text."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def token(self) -> str:
        body = json.dumps({"username": USER, "password": PASSWORD}).encode()
        answer = self.request("POST", "/auth/token", body, token=None)
        return str(answer["access_token"])

    def request(
        self, method: str, path: str, body: bytes | None = None, token: str | None = ""
    ) -> Any:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token or self.token()}"
        request = urllib.request.Request(self.url + path, body, headers, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def wait_for_dag(self, dag_id: str) -> None:
        """Until the DAG processor has stored ``dag_id`` (the server's log is in the error)."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            self.check_running()
            try:
                self.request("GET", f"/api/v2/dags/{dag_id}")
                return
            except (urllib.error.URLError, ConnectionError, KeyError):
                time.sleep(2)
        raise AssertionError(f"DAG {dag_id} never appeared:\n{self.tail()}")

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"airflow standalone exited:\n{self.tail()}")

    def tail(self, size: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-size:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_airflow(base: Path, dags: Path, **extra_env: str) -> AirflowServer:
    """Start ``airflow standalone`` over ``dags``; returns once its API answers."""
    home = base / "airflow-home"
    home.mkdir(parents=True, exist_ok=True)
    passwords = base / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra_env,
    }
    log = base / "standalone.log"
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("airflow")), "standalone"],
        cwd=base,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = AirflowServer(home, dags, url, process, log)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        server.check_running()
        try:
            urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5).close()
            return server
        except (urllib.error.URLError, ConnectionError):
            time.sleep(2)
    server.stop()
    raise AssertionError(f"the api-server did not answer in {STARTUP_SECONDS}s:\n{server.tail()}")
