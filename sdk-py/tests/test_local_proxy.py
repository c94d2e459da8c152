"""`LocalProxy`: the real proxy in-process, against the testkit mock (acceptance 3)."""

from __future__ import annotations

import json
import time
import urllib.request
from decimal import Decimal

import anthropic
import openai
import pytest

import iron_sdk
from iron_sdk import BudgetConfig, InvalidRequest, LocalProxy

from .conftest import ANTHROPIC_KEY, OPENAI_KEY, Mock, wait_until

EMAIL = "alice.smith@example.com"
CARD = "4111 1111 1111 1111"


def local(mock: Mock, **kw: object) -> LocalProxy:
    return LocalProxy(
        {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY},
        upstream_base_urls={"openai": mock.url, "anthropic": mock.url},
        **kw,  # type: ignore[arg-type]
    )


def test_streaming_openai_call_redacts_upstream_restores_for_caller_and_meters(mock: Mock) -> None:
    mock.clear()
    prompt = f"Reply to {EMAIL} about card {CARD}."
    with local(mock, budget=BudgetConfig(max_usd=1.0)) as proxy:
        assert proxy.base_url.startswith("http://127.0.0.1:") and proxy.base_url.endswith("/v1")
        assert proxy.api_key.startswith("ic_")
        client = openai.OpenAI(base_url=proxy.base_url, api_key=proxy.api_key, max_retries=0)
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            extra_headers={"x-mock-echo": "1"},  # the mock answers with the (redacted) prompt
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        # The caller gets the originals back …
        assert text == prompt
        # … the provider saw placeholders and the provider key, never the IC token.
        seen = [r for r in mock.requests() if r["path"].startswith("/v1/chat/completions")]
        assert len(seen) == 1
        body = json.loads(seen[0]["body"])
        upstream_prompt = body["messages"][0]["content"]
        assert EMAIL not in seen[0]["body"] and "4111" not in seen[0]["body"]
        assert "[EMAIL_1]" in upstream_prompt and "[CREDIT_CARD_1]" in upstream_prompt
        assert seen[0]["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
        assert body["stream_options"]["include_usage"] is True

        assert proxy.spent_usd > 0
        assert proxy.spent_microdollars > 0
        assert proxy.remaining_usd == Decimal("1") - proxy.spent_usd
        events = wait_until(proxy.usage, timeout=5)
        assert events and events[0].model == "gpt-4o-mini" and events[0].output_tokens > 0
        assert sum(e.cost_microdollars for e in events) == proxy.spent_microdollars
    assert not proxy.running
    assert proxy.spent_usd > 0  # still readable after stop


def test_anthropic_sdk_through_local_proxy(mock: Mock) -> None:
    mock.clear()
    with local(mock) as proxy:
        client = anthropic.Anthropic(base_url=proxy.anthropic_base_url, api_key=proxy.api_key, max_retries=0)
        with client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": f"mail {EMAIL}"}],
            extra_headers={"x-mock-echo": "1"},
        ) as s:
            text = "".join(s.text_stream)
        assert text == f"mail {EMAIL}"
        seen = [r for r in mock.requests() if r["path"].startswith("/v1/messages")]
        assert seen and EMAIL not in seen[-1]["body"]
        assert seen[-1]["headers"]["x-api-key"] == ANTHROPIC_KEY
        assert proxy.spent_usd > 0


def test_budget_exhaustion_is_a_402(mock: Mock) -> None:
    # 100 micro-dollars cannot cover the minimum output reservation of a gpt-4o call.
    with local(mock, budget=BudgetConfig("0.0001")) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=proxy.api_key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 402
        assert e.value.response.headers["x-iron-error"] == "budget_exceeded"
        translated = iron_sdk.as_budget_exceeded(e.value)
        assert isinstance(translated, iron_sdk.BudgetExceeded)
        assert proxy.spent_usd == 0


def test_pii_options(mock: Mock) -> None:
    prompt = f"mail {EMAIL} from 10.0.0.7"

    def upstream_prompt(proxy: LocalProxy) -> str:
        mock.clear()
        openai.OpenAI(base_url=proxy.base_url, api_key=proxy.api_key, max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
        )
        return str(json.loads(mock.requests()[-1]["body"])["messages"][0]["content"])

    with local(mock, pii=False) as p:
        assert upstream_prompt(p) == prompt
    with local(mock, pii=["IP_ADDRESS"]) as p:
        assert upstream_prompt(p) == f"mail {EMAIL} from [IP_ADDRESS_1]"
    with local(mock, pii={"request": {"EMAIL": "block"}}) as p:
        with pytest.raises(openai.BadRequestError) as e:
            upstream_prompt(p)
        assert e.value.response.headers["x-iron-error"] == "pii_blocked"


def test_tokens_and_admin(mock: Mock) -> None:
    with local(mock, project="my-agent") as proxy:
        second = proxy.mint_token("1h")
        assert second.project == "my-agent" and second.token != proxy.api_key
        assert second.expires_at is not None
        openai.OpenAI(base_url=proxy.base_url, api_key=second.token, max_retries=0).models.list()
        env = proxy.env()
        assert env["OPENAI_BASE_URL"] == proxy.base_url and env["ANTHROPIC_API_KEY"] == proxy.api_key
        with urllib.request.urlopen(proxy.admin_url + "/healthz") as r:
            assert r.status == 200
        # A token from another key is refused.
        other = iron_sdk._iron_sdk.SigningKey().mint("my-agent", 60)[1]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=proxy.base_url, api_key=other, max_retries=0).models.list()
    assert "stopped" in repr(proxy)
    proxy.stop()  # idempotent


def test_stop_is_quick_and_frees_the_port(mock: Mock) -> None:
    proxy = local(mock)
    url = proxy.base_url
    start = time.monotonic()
    proxy.stop()
    assert time.monotonic() - start < 2
    with pytest.raises(openai.APIConnectionError):
        openai.OpenAI(base_url=url, api_key=proxy.api_key, max_retries=0).models.list()


def test_keys_from_environment(mock: Mock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", mock.url + "/v1")
    with LocalProxy() as proxy:
        r = openai.OpenAI(base_url=proxy.base_url, api_key=proxy.api_key, max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert r.choices[0].message.content


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"provider_keys": {}}, "at least one provider key"),
        ({"provider_keys": {"gemini": "k"}}, "unknown provider kind `gemini`"),
        ({"provider_keys": {"openai-compatible": "k"}}, "no default URL"),
        ({"provider_keys": {"openai": " "}}, "is empty"),
        ({"provider_keys": {"openai": "k"}, "upstream_base_urls": {"anthropic": "http://x"}}, "not in provider_keys"),
        ({"provider_keys": {"openai": "k"}, "upstream_base_urls": {"openai": "ftp://x"}}, "scheme must be http or https"),
        ({"provider_keys": {"openai": "k"}, "budget": BudgetConfig(5, "daily")}, "period='total'"),
        ({"provider_keys": {"openai": "k"}, "budget": -3}, "must not be negative"),
        ({"provider_keys": {"openai": "k"}, "pii": ["CARD"]}, "unknown PII type 'CARD'"),
        ({"provider_keys": {"openai": "k"}, "pii": {"request": {"EMAIL": "shred"}}}, "pii policy"),
        ({"provider_keys": {"openai": "k"}, "ttl": "forever"}, "is not a duration"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        LocalProxy(**kwargs)
