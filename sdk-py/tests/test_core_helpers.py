"""The in-process helpers (Rust core) and input validation: no services needed."""

from __future__ import annotations

import pickle
import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest

import iron_sdk
from iron_sdk import BudgetConfig, InvalidRequest, _iron_sdk
from iron_sdk.client import ttl_seconds


def test_package_layout() -> None:
    assert iron_sdk._iron_sdk.__name__ == "iron_sdk._iron_sdk"
    assert iron_sdk.__version__ == _iron_sdk.__version__
    for name in iron_sdk.__all__:
        assert hasattr(iron_sdk, name), name


def test_redact_all_types_and_selected_types() -> None:
    text = "mail alice@example.com, card 4111 1111 1111 1111, ip 10.1.2.3, key AKIAIOSFODNN7EXAMPLE"
    out = iron_sdk.redact(text)
    assert "alice@example.com" not in out and "4111" not in out and "10.1.2.3" not in out
    assert "[REDACTED:EMAIL]" in out and "[REDACTED:CREDIT_CARD]" in out and "[REDACTED:IP_ADDRESS]" in out
    assert "[REDACTED:SECRET]" in out
    only_ip = iron_sdk.redact(text, types=["ip_address"])
    assert "alice@example.com" in only_ip and "[REDACTED:IP_ADDRESS]" in only_ip
    assert iron_sdk.redact(text, types="EMAIL").count("[REDACTED:") == 1
    assert iron_sdk.redact("nothing here") == "nothing here"


def test_redact_reversible_numbers_values() -> None:
    out = iron_sdk.redact("a@x.io b@y.io a@x.io", reversible=True)
    assert out == "[EMAIL_1] [EMAIL_2] [EMAIL_1]"


def test_detect_offsets_are_string_indices() -> None:
    text = "héllo ✓ mail bob@example.org then 192.168.0.1"
    found = iron_sdk.detect(text)
    assert [(m.type, m.text) for m in found] == [("EMAIL", "bob@example.org"), ("IP_ADDRESS", "192.168.0.1")]
    for m in found:
        assert text[m.start : m.end] == m.text
    assert [m.type for m in iron_sdk.detect(text, types=["EMAIL"])] == ["EMAIL"]


def test_unknown_pii_type_is_a_typed_error() -> None:
    with pytest.raises(InvalidRequest, match=r"unknown PII type `CARD`.*EMAIL"):
        iron_sdk.redact("x", types=["CARD"])
    with pytest.raises(ValueError):  # InvalidRequest is also a ValueError
        iron_sdk.detect("x", types=["nope"])


def test_estimate_cost_is_exact() -> None:
    assert iron_sdk.estimate_cost("gpt-4o-mini", 1_000_000, 0) == Decimal("0.15")
    assert iron_sdk.estimate_cost("gpt-4o", 1000, 500) == Decimal("0.0075")
    # Dated snapshots are priced by their family.
    assert iron_sdk.estimate_cost("gpt-4o-2024-08-06", 1000, 500) == Decimal("0.0075")
    cached = iron_sdk.estimate_cost("gpt-4o", 1000, 0, cached_input_tokens=1000)
    assert Decimal(0) < cached < iron_sdk.estimate_cost("gpt-4o", 1000, 0)
    assert iron_sdk.estimate_cost("gpt-4o-mini", 0, 0) == Decimal(0)


def test_estimate_cost_errors() -> None:
    with pytest.raises(InvalidRequest) as e:
        iron_sdk.estimate_cost("no-such-model", 10, 10)
    assert e.value.code == "unknown_model_price"
    assert "no-such-model" in str(e.value)
    with pytest.raises(InvalidRequest, match="input_tokens must be a non-negative integer"):
        iron_sdk.estimate_cost("gpt-4o", -1, 0)
    with pytest.raises(InvalidRequest, match="must not exceed input_tokens"):
        iron_sdk.estimate_cost("gpt-4o", 10, 0, cached_input_tokens=11)


@pytest.mark.parametrize(
    ("amount", "wire", "micros"),
    [
        (50.0, "50", 50_000_000),
        (50, "50", 50_000_000),
        (0.1, "0.1", 100_000),
        (0.1 + 0.2, "0.3", 300_000),  # floats: nearest micro-dollar
        ("12.50", "12.5", 12_500_000),
        (Decimal("0.000001"), "0.000001", 1),
        ("$3", "3", 3_000_000),
        (0, "0", 0),
    ],
)
def test_budget_config_converts_exactly(amount: iron_sdk.Amount, wire: str, micros: int) -> None:
    b = BudgetConfig(amount)
    assert b.usd == wire
    assert b.microdollars == micros
    assert b.amount == Decimal(wire)
    assert b.period == "total"


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (-1.0, "must not be negative"),
        ("-5", "must not be negative"),
        (Decimal("-0.5"), "must not be negative"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("1.1234567", "more than 6 decimal places"),
        ("abc", "not a valid dollar amount"),
        (2e9, "at most 1000000000 USD"),
        (True, "must be a number of dollars"),
        (None, "must be a number of dollars"),
    ],
)
def test_budget_config_rejects_bad_amounts(amount: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as e:
        BudgetConfig(amount)  # type: ignore[arg-type]
    assert str(e.value).startswith("BudgetConfig.max_usd")


def test_budget_config_period() -> None:
    assert BudgetConfig(5, "daily").period == "daily"
    with pytest.raises(InvalidRequest, match=r"period must be one of total, daily, monthly \(got 'weekly'\)"):
        BudgetConfig(5, "weekly")  # type: ignore[arg-type]


@pytest.mark.parametrize(("ttl", "seconds"), [("7d", 7 * 86400), ("30m", 1800), ("12h", 43200), (3600, 3600), (timedelta(hours=2), 7200)])
def test_ttl(ttl: iron_sdk.client.TtlArg, seconds: int) -> None:
    assert ttl_seconds(ttl) == seconds


@pytest.mark.parametrize(
    ("ttl", "message"),
    [("7 days please", "is not a duration"), ("tomorrow", "is not a duration"), ("10s", "between 1m and 366d"), ("400d", "between 1m and 366d"), (True, "must be a duration")],
)
def test_bad_ttl(ttl: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        ttl_seconds(ttl)  # type: ignore[arg-type]


def test_errors_pickle_and_carry_details() -> None:
    e = iron_sdk.NotFound("project `x` not found", "not_found", status_code=404, type="not_found_error")
    back = pickle.loads(pickle.dumps(e))
    assert isinstance(back, iron_sdk.NotFound)
    assert (back.message, back.code, back.status_code, back.type) == (e.message, "not_found", 404, "not_found_error")
    assert repr(back) == "NotFound('project `x` not found', code='not_found', status_code=404)"


def test_error_mapping() -> None:
    from iron_sdk.errors import error_from_response

    def body(code: str) -> dict:
        return {"error": {"type": "x", "message": "m", "code": code}}

    assert type(error_from_response(401, body("invalid_api_key"))) is iron_sdk.AuthError
    assert type(error_from_response(403, body("forbidden"))) is iron_sdk.AuthError
    assert type(error_from_response(404, body("not_found"))) is iron_sdk.NotFound
    assert type(error_from_response(402, body("budget_exceeded"))) is iron_sdk.BudgetExceeded
    assert type(error_from_response(409, body("already_exists"))) is iron_sdk.Conflict
    assert type(error_from_response(400, body("invalid_request"))) is iron_sdk.InvalidRequest
    assert type(error_from_response(503, body("store_unavailable"))) is iron_sdk.ServiceUnavailable
    assert type(error_from_response(500, "oops")) is iron_sdk.IronError
    anthropic_shape = {"type": "error", "error": {"type": "budget_exceeded", "message": "spent"}}
    e = error_from_response(402, anthropic_shape, {"x-iron-error": "budget_exceeded"})
    assert isinstance(e, iron_sdk.BudgetExceeded) and e.code == "budget_exceeded" and e.message == "spent"


def test_signing_key_mints_verifiable_shape() -> None:
    key = _iron_sdk.SigningKey()
    assert key.kid.startswith("k_")
    pk = key.public_key()
    assert pk["alg"] == "EdDSA" and pk["kid"] == key.kid
    token_id, token, exp = key.mint("prj_1", 60)
    assert token_id.startswith("tok_") and token.startswith("ic_") and exp > time.time()
    with pytest.raises(InvalidRequest, match="project must not be empty"):
        key.mint("", 60)


def test_signing_key_mints_rate_limit_claims() -> None:
    import base64
    import json

    def claims(token: str) -> dict[str, object]:
        payload = token.split(".")[1]
        decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return decoded

    key = _iron_sdk.SigningKey()
    _, token, _ = key.mint("prj_1", 60, rpm=60, tpm=5000)
    c = claims(token)
    assert c["rpm"] == 60 and c["tpm"] == 5000
    _, plain, _ = key.mint("prj_1", 60)
    assert "rpm" not in claims(plain) and "tpm" not in claims(plain)
    with pytest.raises(InvalidRequest, match="rpm"):
        key.mint("prj_1", 60, rpm=0)


def test_native_calls_release_the_gil() -> None:
    """Another Python thread keeps running while a long redaction runs in Rust.

    A thread holding the GIL in C code is never preempted; after the call returns, the other
    thread gets at most one switch interval (1 ms here) before we read its counter. So if the
    counter advanced for a good part of the call's duration, the call released the GIL."""
    # A text that takes the engine at least 20 ms (debug and release builds differ a lot).
    n = 10_000
    while True:
        text = "card 1234 5678 " * n + "alice@example.com"
        start = time.perf_counter()
        iron_sdk.redact(text)
        if time.perf_counter() - start > 0.02 or n > 5_000_000:
            break
        n *= 2
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.05)
        t0, c0 = time.perf_counter(), ticks
        time.sleep(0.1)
        rate = (ticks - c0) / (time.perf_counter() - t0)  # ticks per second with the GIL free
        before, start = ticks, time.perf_counter()
        out = iron_sdk.redact(text)
        elapsed = time.perf_counter() - start
        during = ticks - before
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
    assert out.endswith("[REDACTED:EMAIL]")
    assert elapsed > 0.01, f"the call took {elapsed:.4f}s: too short to tell"
    share = during / (rate * elapsed)
    assert share > 0.3, f"the other thread ran {share:.0%} of the call's {elapsed:.3f}s: the GIL was held"
