"""Runs every Python example of `sdk-py/README.md` (after pydantic-core's test_docstrings).

Each ```python block is preceded by `<!-- test: MODE -->`:
- `local`: no control service; `OPENAI_API_KEY` / `OPENAI_BASE_URL` point at the mock (what a
  user's environment holds for a real provider);
- `control`: `IRON_CONTROL_URL` / `IRON_API_KEY` / `IRON_PROXY_URL` point at `iron up`;
- `skip`: not run (none today).
Blocks of one mode run in order, each in a fresh namespace.
"""

from __future__ import annotations

import doctest
import re
import time
from pathlib import Path
from typing import List, Tuple

import pytest

import iron_sdk

from .conftest import OPENAI_KEY, IronUp, Mock

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(?:<!-- test: (\w+) -->\n)?```python\n(.*?)```", re.S)


def blocks() -> List[Tuple[str, int, str]]:
    text = README.read_text()
    out = []
    for m in BLOCK.finditer(text):
        line = text[: m.start(2)].count("\n") + 1
        out.append((m.group(1) or "", line, m.group(2)))
    return out


def run(mode: str) -> int:
    ran = 0
    for block_mode, line, code in blocks():
        if block_mode != mode:
            continue
        try:
            exec(compile(code, f"{README}:{line}", "exec"), {"__name__": f"readme_{line}"})
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"README example at line {line} failed: {type(e).__name__}: {e}")
        ran += 1
        time.sleep(0.3)  # let a proxy in control mode learn what the block created
    return ran


def test_every_example_is_tested() -> None:
    found = blocks()
    assert found, "no examples found"
    for mode, line, _ in found:
        assert mode in ("local", "control", "skip"), f"README line {line}: add <!-- test: local|control|skip -->"


def test_local_examples(mock: Mock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", mock.url + "/v1")
    assert run("local") >= 5


def test_control_examples(iron_up: IronUp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRON_CONTROL_URL", iron_up.control_url)
    monkeypatch.setenv("IRON_API_KEY", iron_up.admin_key)
    monkeypatch.setenv("IRON_PROXY_URL", iron_up.proxy_url)
    assert run("control") >= 3
    spent = iron_up.client().budget("support-bot").spent_microdollars
    deadline = time.monotonic() + 10
    while spent == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        spent = iron_up.client().budget("support-bot").spent_microdollars
    assert spent > 0


def test_docstring_examples() -> None:
    """The `>>>` examples in the package's docstrings."""
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tested = 0
    for module in (iron_sdk, iron_sdk.helpers):
        for test in finder.find(module, module.__name__):
            runner.run(test)
            tested += len(test.examples)
    result = runner.summarize(verbose=False)
    assert tested >= 4 and result.failed == 0
