"""`protect_agent` with the official openai SDK inside the protected function: with the control
service of a real `iron up` (acceptance 2) and with the embedded proxy."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from decimal import Decimal
from typing import Any, Dict, Iterator, List, Optional

import openai
import pytest

import iron_sdk
from iron_sdk import BudgetConfig, BudgetExceeded, IronClient, current_scope, protect_agent
from iron_sdk.protect import ENV_VARS, _active

from .conftest import OPENAI_KEY, IronUp, Mock, chat_until_routed, wait_until

PROMPT = [{"role": "user", "content": "hello"}]


def env_now() -> Dict[str, Optional[str]]:
    return {k: os.environ.get(k) for k in ENV_VARS}


def ask(model: str = "gpt-4o-mini", **extra: Any) -> str:
    """What an agent does: the openai SDK configured only by the environment."""
    c = openai.OpenAI(max_retries=0)
    r = c.chat.completions.create(model=model, messages=PROMPT, **extra)  # type: ignore[arg-type]
    return str(r.choices[0].message.content)


@pytest.fixture
def routed_project(client: IronClient, iron_up: IronUp, project_name: str) -> str:
    """A project the proxy already knows (control mode loads new projects within ~1 s)."""
    client.create_project(project_name, budget=BudgetConfig(5))
    warm = client.mint_token(project_name, ttl="5m")
    chat_until_routed(iron_up.proxy_url + "/v1", warm.token)
    client.revoke_token(warm)
    # Wait for the warm-up spend to settle so tests can measure their own.
    wait_until(lambda: client.budget(project_name).spent_microdollars > 0, timeout=10)
    return project_name


# -- with the control service ----------------------------------------------------------------


def test_control_mode_call_succeeds_spend_shows_in_budget_env_restored(
    client: IronClient, iron_up: IronUp, routed_project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-users-own-key")
    before_env = env_now()
    before = client.budget(routed_project)
    seen: Dict[str, Any] = {}

    @protect_agent(budget=BudgetConfig(max_usd=0.5), project=routed_project, client=client)
    def research_agent(question: str) -> str:
        seen["env"] = env_now()
        seen["scope"] = current_scope()
        return ask()

    answer = research_agent("why?")
    assert answer
    scope = seen["scope"]
    assert scope.mode == "control" and scope.project.startswith("prj_")
    assert seen["env"]["OPENAI_BASE_URL"] == iron_up.proxy_url + "/v1"
    assert seen["env"]["ANTHROPIC_BASE_URL"] == iron_up.proxy_url
    assert seen["env"]["OPENAI_API_KEY"] == seen["env"]["ANTHROPIC_API_KEY"] == scope.token.token
    assert scope.token.token.startswith("ic_")
    # Restored afterwards; no scope left.
    assert env_now() == before_env
    assert current_scope() is None and not _active

    # The scoped token: named after the function, with the budget, revoked at the end.
    info = client.get_token(scope.token.id)
    assert info.name == "research_agent" and info.budget_usd == Decimal("0.5") and info.revoked

    # The spend appears in the project's budget and in usage.
    after = wait_until(lambda: (b := client.budget(routed_project)).spent_microdollars > before.spent_microdollars and b)
    assert after, "the agent's spend never showed up in IronClient.budget"
    usage = wait_until(lambda: client.usage(routed_project, since="1h", token=scope.token.id))
    assert usage and sum(u.cost_microdollars for u in usage) == after.spent_microdollars - before.spent_microdollars


def test_control_mode_from_environment_async(iron_up: IronUp, client: IronClient, routed_project: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRON_CONTROL_URL", iron_up.control_url)
    monkeypatch.setenv("IRON_API_KEY", iron_up.admin_key)
    monkeypatch.setenv("IRON_PROXY_URL", iron_up.proxy_url)
    monkeypatch.setenv("IRON_PROJECT", routed_project)

    @protect_agent(budget=BudgetConfig(1))
    async def agent() -> str:
        c = openai.AsyncOpenAI(max_retries=0)
        r = await c.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)  # type: ignore[arg-type]
        scope = current_scope()
        assert scope is not None and scope.mode == "control"
        return str(r.choices[0].message.content)

    assert asyncio.run(agent())
    assert os.environ.get("OPENAI_API_KEY") is None


def test_control_mode_budget_exceeded(client: IronClient, routed_project: str) -> None:
    # 100 micro-dollars: not enough for one gpt-4o call (its minimum output reservation).
    @protect_agent(budget=BudgetConfig("0.0001"), project=routed_project, client=client)
    def expensive() -> str:
        return ask("gpt-4o")

    with pytest.raises(BudgetExceeded) as e:
        expensive()
    assert e.value.status_code == 402 and e.value.code == "budget_exceeded"
    assert isinstance(e.value.__cause__, openai.APIStatusError)
    assert current_scope() is None and os.environ.get("OPENAI_API_KEY") is None


def test_control_mode_budget_runs_out_after_some_calls(client: IronClient, routed_project: str) -> None:
    calls: List[str] = []

    @protect_agent(budget=BudgetConfig("0.0001"), project=routed_project, client=client)
    def chatty() -> None:
        scope = current_scope()
        assert scope is not None
        calls.append(scope.token.id)
        for _ in range(200):
            ask("gpt-4o-mini")
            calls.append("ok")

    with pytest.raises(BudgetExceeded):
        chatty()
    assert 1 < calls.count("ok") < 200
    spent = wait_until(lambda: sum(u.cost_microdollars for u in client.usage(routed_project, since="1h", token=calls[0])))
    assert 0 < spent <= 100, f"spent {spent} µ$ on a 100 µ$ budget"


def test_unknown_project_in_control_mode(client: IronClient) -> None:
    @protect_agent(budget=BudgetConfig(1), project="no-such-project-xyz", client=client)
    def agent() -> None:
        raise AssertionError("must not run")

    with pytest.raises(iron_sdk.NotFound, match="no-such-project-xyz"):
        agent()
    assert os.environ.get("OPENAI_API_KEY") is None


def test_default_project_is_created(client: IronClient, iron_up: IronUp) -> None:
    with protect_agent(budget=BudgetConfig(1), client=client) as scope:
        assert scope.mode == "control"
    assert client.get_project("default").id == scope.project
    with protect_agent(budget=BudgetConfig(1), client=client) as again:  # exists now
        assert again.project == scope.project


# -- with the embedded proxy -----------------------------------------------------------------


@pytest.fixture
def provider_env(mock: Mock, monkeypatch: pytest.MonkeyPatch) -> Mock:
    """The environment of an agent without Iron: a provider key and (here) the mock's URL."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", mock.url + "/v1")
    return mock


def test_local_mode_call_succeeds_and_env_is_restored(provider_env: Mock) -> None:
    provider_env.clear()
    before = env_now()
    seen: Dict[str, Any] = {}

    @protect_agent(budget=BudgetConfig(max_usd=50.0))
    def agent() -> str:
        seen["env"] = env_now()
        scope = current_scope()
        assert scope is not None
        out = openai.OpenAI(max_retries=0).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "write to bob@example.com"}],
            extra_headers={"x-mock-echo": "1"},
        )
        seen["spent"] = scope.spent_usd
        seen["scope"] = scope
        return str(out.choices[0].message.content)

    assert agent() == "write to bob@example.com"
    scope = seen["scope"]
    assert scope.mode == "local" and scope.local_proxy is not None and not scope.local_proxy.running
    assert seen["env"]["OPENAI_BASE_URL"] == scope.base_url != before["OPENAI_BASE_URL"]
    assert seen["env"]["OPENAI_API_KEY"].startswith("ic_")
    assert seen["spent"] > 0
    assert env_now() == before
    req = provider_env.requests()[-1]
    assert req["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert "bob@example.com" not in req["body"]


def test_local_mode_budget_exceeded(provider_env: Mock) -> None:
    @protect_agent(budget=BudgetConfig("0.0001"))
    def agent() -> str:
        return ask("gpt-4o")

    with pytest.raises(BudgetExceeded) as e:
        agent()
    assert e.value.status_code == 402
    assert env_now()["OPENAI_API_KEY"] == OPENAI_KEY


def test_local_mode_stream_cut_off_for_budget(provider_env: Mock) -> None:
    # 1000 µ$ cover the reservation of a gpt-4o call, not a 1000-token answer (10 µ$ a token).
    chunks: List[str] = []

    @protect_agent(budget=BudgetConfig("0.001"))
    def agent() -> None:
        stream = openai.OpenAI(max_retries=0).chat.completions.create(
            model="gpt-4o", messages=PROMPT, stream=True, extra_headers={"x-mock-tokens": "1000"}  # type: ignore[arg-type]
        )
        for c in stream:
            if c.choices and c.choices[0].delta.content:
                chunks.append(c.choices[0].delta.content)

    with pytest.raises(BudgetExceeded):
        agent()
    assert 0 < len(chunks) < 1000


def test_async_and_generator_functions(provider_env: Mock) -> None:
    @protect_agent(budget=BudgetConfig(1))
    async def async_agent() -> str:
        c = openai.AsyncOpenAI(max_retries=0)
        r = await c.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)  # type: ignore[arg-type]
        return str(r.choices[0].message.content)

    @protect_agent(budget=BudgetConfig(1))
    def gen_agent() -> Iterator[str]:
        for _ in range(2):
            yield os.environ["OPENAI_API_KEY"]

    assert asyncio.run(async_agent())
    keys = list(gen_agent())
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0].startswith("ic_")
    assert env_now()["OPENAI_API_KEY"] == OPENAI_KEY


def test_context_manager_and_explicit_settings(mock: Mock) -> None:
    mock.clear()
    with protect_agent(
        budget=1.0,
        local=True,
        project="ctx-agent",
        provider_keys={"openai": "sk-explicit"},
        upstream_base_urls={"openai": mock.url},
        pii=False,
    ) as scope:
        c = openai.OpenAI(**scope.openai_kwargs(), max_retries=0)
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a@b.io"}])
        assert scope.project == "ctx-agent"
    req = mock.requests()[-1]
    assert req["headers"]["authorization"] == "Bearer sk-explicit"
    assert "a@b.io" in req["body"]  # pii=False
    assert os.environ.get("OPENAI_API_KEY") is None


def test_nested_scopes_chain_through_the_outer_proxy(provider_env: Mock) -> None:
    provider_env.clear()
    with protect_agent(budget=BudgetConfig(2)) as outer:
        with protect_agent(budget=BudgetConfig(1)) as inner:
            assert os.environ["OPENAI_API_KEY"] == inner.api_key != outer.api_key
            ask()
            assert inner.spent_usd is not None and inner.spent_usd > 0
        assert os.environ["OPENAI_API_KEY"] == outer.api_key
        # The inner call was paid from the outer budget too.
        assert outer.spent_usd is not None and outer.spent_usd > 0
    assert env_now()["OPENAI_API_KEY"] == OPENAI_KEY
    assert provider_env.requests()[-1]["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"


def test_concurrent_scopes_in_threads(provider_env: Mock) -> None:
    """Each thread's scope is its own (current_scope); the shared environment stays consistent
    and is restored when the last scope ends."""
    results: Dict[int, str] = {}
    errors: List[BaseException] = []
    barrier = threading.Barrier(4)

    @protect_agent(budget=BudgetConfig(1))
    def agent(i: int) -> None:
        scope = current_scope()
        assert scope is not None
        barrier.wait(timeout=30)  # all four scopes are active at once
        c = openai.OpenAI(**scope.openai_kwargs(), max_retries=0)
        c.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)  # type: ignore[arg-type]
        assert os.environ["OPENAI_API_KEY"].startswith("ic_")
        results[i] = scope.token.id

    def run(i: int) -> None:
        try:
            agent(i)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(set(results.values())) == 4
    assert env_now()["OPENAI_API_KEY"] == OPENAI_KEY and not _active


def test_a_scope_started_while_another_thread_s_is_active_talks_to_the_provider(provider_env: Mock) -> None:
    """A second thread's scope takes its upstream from the agent's own environment, not from
    the first scope's proxy URL and token that are in `os.environ` meanwhile: it keeps working
    after the first scope (and its proxy) has ended."""
    provider_env.clear()
    first_active, second_active, first_done = threading.Event(), threading.Event(), threading.Event()
    errors: List[BaseException] = []

    @protect_agent(budget=BudgetConfig(1))
    def first() -> None:
        first_active.set()
        assert second_active.wait(30)

    @protect_agent(budget=BudgetConfig(1))
    def second() -> None:
        second_active.set()
        assert first_done.wait(30)  # the first scope's proxy is gone now
        scope = current_scope()
        assert scope is not None
        c = openai.OpenAI(**scope.openai_kwargs(), max_retries=0)
        c.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)  # type: ignore[arg-type]

    def run_first() -> None:
        try:
            first()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            first_done.set()

    def run_second() -> None:
        try:
            assert first_active.wait(30)
            second()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run_first), threading.Thread(target=run_second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    # The provider got the call with the agent's real key.
    reqs = provider_env.requests()
    assert len(reqs) == 1, reqs
    assert reqs[0]["headers"]["authorization"] == f"Bearer {OPENAI_KEY}", reqs[0]["headers"]
    assert env_now()["OPENAI_API_KEY"] == OPENAI_KEY and not _active


def test_other_errors_pass_through(provider_env: Mock) -> None:
    @protect_agent(budget=BudgetConfig(1))
    def broken() -> None:
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        broken()

    @protect_agent(budget=BudgetConfig(1))
    def bad_model() -> None:
        ask("no-such-model")  # Iron: 400 unknown_model_price

    with pytest.raises(openai.BadRequestError):
        bad_model()
    assert env_now()["OPENAI_API_KEY"] == OPENAI_KEY


def test_local_mode_needs_provider_keys() -> None:
    @protect_agent(budget=BudgetConfig(1))
    def agent() -> None:
        raise AssertionError("must not run")

    with pytest.raises(iron_sdk.InvalidRequest, match="OPENAI_API_KEY"):
        agent()


def test_bad_settings_fail_at_decoration() -> None:
    with pytest.raises(iron_sdk.InvalidRequest, match="must not be negative"):
        protect_agent(budget=-5)
    with pytest.raises(iron_sdk.InvalidRequest, match="not a duration"):
        protect_agent(budget=1, ttl="a while")


def test_as_budget_exceeded_recognises_iron_errors_only() -> None:
    class Response:
        def __init__(self, status: int, headers: Dict[str, str]) -> None:
            self.status_code = status
            self.headers = headers

    class PaymentRequired(Exception):  # a 402 from something else than an LLM SDK
        status_code = 402
        response = Response(402, {})

    assert iron_sdk.as_budget_exceeded(PaymentRequired()) is None

    class WithHeader(Exception):
        response = Response(402, {"x-iron-error": "budget_exceeded"})

    assert isinstance(iron_sdk.as_budget_exceeded(WithHeader()), BudgetExceeded)

    class StreamError(Exception):  # the SSE error event of a cut-off stream
        body = {"type": "budget_exceeded", "message": "budget exhausted mid-stream"}

    e = iron_sdk.as_budget_exceeded(StreamError())
    assert e is not None and e.message == "budget exhausted mid-stream"
    assert iron_sdk.as_budget_exceeded(ValueError("x")) is None


def test_upstream_body_is_json(provider_env: Mock) -> None:
    """The key swap also holds in local mode (a sanity check on the recorded request)."""
    provider_env.clear()

    @protect_agent(budget=BudgetConfig(1))
    def agent() -> None:
        ask()

    agent()
    body = json.loads(provider_env.requests()[-1]["body"])
    assert body["model"] == "gpt-4o-mini"
