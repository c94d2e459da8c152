"""Fixtures: the testkit mock upstream (`iron-mock`) and a real `iron up` (control + proxy, an
embedded store in a temporary data dir), both on ephemeral ports, started once per session.

The binaries come from the workspace's target directory (`IRON_BIN_DIR`, default
`target/debug`); `sdk-py/test.sh` builds them when missing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

import iron_sdk

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("IRON_BIN_DIR", ROOT / "target" / "debug"))

# Provider keys the mock accepts (any non-empty key works; these prove the swap).
OPENAI_KEY = "sk-mock-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-mock-0123456789"

# Variables the SDK reads or writes; no test sees the developer's values.
SDK_ENV = (
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "IRON_CONTROL_URL",
    "IRON_API_KEY",
    "IRON_PROXY_URL",
    "IRON_PROJECT",
)


def binary(name: str) -> Path:
    path = BIN_DIR / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build -p iron-cli -p iron-testkit` (sdk-py/test.sh does)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


def wait_for_output(out: "Output", proc: subprocess.Popen, needle: str, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(needle in line for line in out.lines):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{what}: no line containing {needle!r} within {timeout}s")


class Output:
    """Collects a child's output on a thread (so its pipe never fills up)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: List[str] = []
        assert proc.stdout is not None
        self._t = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._t.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines[-200:])


@dataclass
class Mock:
    url: str

    def requests(self) -> List[Dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/__mock/requests") as r:
            return list(json.load(r))

    def clear(self) -> None:
        req = urllib.request.Request(self.url + "/__mock/requests", method="DELETE")
        urllib.request.urlopen(req).close()


@pytest.fixture(scope="session")
def mock() -> Iterator[Mock]:
    proc = subprocess.Popen(
        [str(binary("iron-mock")), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        pytest.fail(f"iron-mock did not start: {line!r}")
    Output(proc)
    try:
        yield Mock(line.strip().rsplit(" ", 1)[-1])
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class IronUp:
    control_url: str
    proxy_url: str
    admin_url: str
    admin_key: str
    data_dir: Path
    output: Output

    def client(self) -> iron_sdk.IronClient:
        return iron_sdk.IronClient(self.control_url, self.admin_key, proxy_url=self.proxy_url)


@pytest.fixture(scope="session")
def iron_up(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IronUp]:
    """`iron up` with its providers (openai, anthropic) pointed at the mock."""
    data = tmp_path_factory.mktemp("iron-up") / "data"
    proxy, control, admin = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in SDK_ENV}
    env.update(OPENAI_API_KEY=OPENAI_KEY, ANTHROPIC_API_KEY=ANTHROPIC_KEY, IRON_LOG="info")
    proc = subprocess.Popen(
        [
            str(binary("iron")),
            "up",
            "--data-dir",
            str(data),
            "--proxy-listen",
            f"127.0.0.1:{proxy}",
            "--control-listen",
            f"127.0.0.1:{control}",
            "--admin-listen",
            f"127.0.0.1:{admin}",
            "--upstream-base-url",
            mock.url,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = Output(proc)
    try:
        wait_for_port(control, proc, "iron up (control)")
        wait_for_port(proxy, proc, "iron up (proxy)")
        # `iron up` prints its banner (last line below) once the proxy has loaded its routing
        # data; before that agents get 503 "Iron is starting".
        wait_for_output(out, proc, "Then: iron project create demo", "iron up (banner)")
        key = (data / "admin.key").read_text().strip()
        up = IronUp(f"http://127.0.0.1:{control}", f"http://127.0.0.1:{proxy}", f"http://127.0.0.1:{admin}", key, data, out)
        yield up
    except Exception:
        print(out.text())
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees (or leaks) the SDK's environment variables."""
    for k in SDK_ENV:
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def client(iron_up: IronUp) -> iron_sdk.IronClient:
    return iron_up.client()


_counter = iter(range(1_000_000))


@pytest.fixture
def project_name(request: pytest.FixtureRequest) -> str:
    """A fresh, valid project name per test."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    return f"{base}-{os.getpid()}-{next(_counter)}"


def wait_until(cond: Any, timeout: float = 10.0, interval: float = 0.1) -> Any:
    """Polls ``cond()`` until it returns a truthy value (returned) or the timeout passes."""
    deadline = time.monotonic() + timeout
    last: Optional[Any] = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    return last


def chat_until_routed(base_url: str, api_key: str, attempts: int = 50) -> Any:
    """A first chat call, retried while the proxy has not yet loaded a just-created project or
    token (control mode picks changes up within ~1 s); other errors are raised."""
    import openai

    c = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    for _ in range(attempts):
        try:
            return c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        except (openai.AuthenticationError, openai.NotFoundError, openai.PermissionDeniedError):
            time.sleep(0.1)
    return c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
