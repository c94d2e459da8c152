"""`IronClient` against a real `iron up` (acceptance 2 and 5): projects, tokens, budgets,
usage, and typed errors."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import openai
import pytest

import iron_sdk
from iron_sdk import AsyncIronClient, BudgetConfig, IronClient

from .conftest import IronUp, chat_until_routed, free_port, wait_until


def test_mint_list_revoke_round_trip(client: IronClient, iron_up: IronUp, project_name: str) -> None:
    project = client.create_project(project_name, budget=BudgetConfig(max_usd=5))
    assert project.id.startswith("prj_") and project.name == project_name
    assert project.budget_usd == Decimal("5") and project.period == "total"
    assert client.get_project(project_name).id == project.id
    assert project.id in [p.id for p in client.list_projects()]

    token = client.mint_token(project_name, name="ci", budget=BudgetConfig(1, "daily"), ttl="1h")
    assert token.id.startswith("tok_") and token.token.startswith("ic_")
    assert token.project == project.id and token.project_name == project_name and token.name == "ci"
    assert token.expires_at is not None
    lifetime = token.expires_at - datetime.now(timezone.utc)
    assert timedelta(minutes=58) < lifetime <= timedelta(hours=1, seconds=5)
    assert token.token not in repr(token) and token.token not in str(token)

    listed = {t.id: t for t in client.list_tokens(project_name)}
    assert token.id in listed
    info = listed[token.id]
    assert info.status == "active" and not info.revoked
    assert info.budget_usd == Decimal("1") and info.period == "daily" and info.name == "ci"
    assert token.id in [t.id for t in client.list_tokens()]

    # The token works through the proxy …
    r = chat_until_routed(iron_up.proxy_url + "/v1", token.token)
    assert r.choices[0].message.content

    # … until it is revoked.
    revoked = client.revoke_token(token)
    assert revoked.revoked and revoked.revoked_at is not None
    assert client.get_token(token.id).revoked
    assert client.revoke_token(token.id).revoked  # idempotent
    oa = openai.OpenAI(base_url=iron_up.proxy_url + "/v1", api_key=token.token, max_retries=0)

    def refused() -> bool:
        try:
            oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            return False
        except openai.AuthenticationError:
            return True

    assert wait_until(refused, timeout=5), "the revoked token is still accepted"


def test_budget_and_usage_round_trip(client: IronClient, iron_up: IronUp, project_name: str) -> None:
    client.create_project(project_name, budget=BudgetConfig("2.50"))
    before = client.budget(project_name)
    assert before.limit_usd == Decimal("2.50") and before.limit_microdollars == 2_500_000
    assert before.spent_usd == 0 and before.remaining_usd == Decimal("2.50")
    token = client.mint_token(project_name, ttl="10m")
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    chat_until_routed(iron_up.proxy_url + "/v1", token.token)

    status = wait_until(lambda: (b := client.budget(project_name)).spent_microdollars > 0 and b, timeout=10)
    assert status, "the spend never reached control"
    assert status.spent_usd == Decimal(status.spent_microdollars) / 1_000_000
    assert status.remaining_microdollars == 2_500_000 - status.spent_microdollars - status.leased_microdollars

    usage = wait_until(lambda: client.usage(project_name, since="1h"), timeout=10)
    assert usage and all(u.project == status.project for u in usage)
    u = usage[-1]
    assert u.token == token.id and u.model == "gpt-4o-mini" and u.status == 200
    assert u.input_tokens > 0 and u.output_tokens > 0 and u.cost_microdollars > 0
    assert sum(x.cost_microdollars for x in usage) == status.spent_microdollars
    assert client.usage(project_name, since=since) == usage
    assert client.usage(project_name, since=timedelta(hours=1), token=token.id, model="gpt-4o-mini") == usage
    assert client.usage(project_name, since=datetime.now(timezone.utc) + timedelta(hours=1)) == []


def test_set_budget_and_delete_project(client: IronClient, project_name: str) -> None:
    client.create_project(project_name)
    assert client.budget(project_name).limit_usd is None
    p = client.set_budget(project_name, BudgetConfig(7, "monthly"))
    assert p.budget_usd == Decimal("7") and p.period == "monthly"
    assert client.set_budget(project_name, None).budget_usd is None
    client.delete_project(project_name)
    with pytest.raises(iron_sdk.NotFound):
        client.get_project(project_name)


def test_providers(client: IronClient, mock: object) -> None:
    names = {p.name for p in client.list_providers()}
    assert {"openai", "anthropic"} <= names
    p = client.create_provider(f"extra-{int(time.time() * 1000)}", "openai-compatible", "http://127.0.0.1:9", "sk-extra-secret-1234")
    assert p.kind == "openai-compatible" and "sk-extra-secret-1234" not in repr(p.raw)
    client.delete_provider(p.id)


def test_errors_are_typed_with_clear_messages(client: IronClient, iron_up: IronUp, project_name: str) -> None:
    # Unknown project: the server's 404.
    with pytest.raises(iron_sdk.NotFound) as nf:
        client.mint_token("no-such-project-xyz")
    assert "no-such-project-xyz" in str(nf.value) and nf.value.status_code == 404 and nf.value.code == "not_found"
    with pytest.raises(iron_sdk.NotFound):
        client.budget("no-such-project-xyz")
    with pytest.raises(iron_sdk.NotFound):
        client.revoke_token("tok_01ARZ3NDEKTSV4RRFFQ69G5FAV")

    # Bad input caught before any request is sent.
    client.create_project(project_name)
    with pytest.raises(iron_sdk.InvalidRequest, match="ttl `soon` is not a duration"):
        client.mint_token(project_name, ttl="soon")
    with pytest.raises(iron_sdk.InvalidRequest, match="between 1m and 366d"):
        client.mint_token(project_name, ttl="500d")
    with pytest.raises(iron_sdk.InvalidRequest, match="must not be negative"):
        client.mint_token(project_name, budget=BudgetConfig(-1))
    assert client.list_tokens(project_name) == []

    # Bad input refused by the server: 400 → InvalidRequest (a ValueError).
    with pytest.raises(iron_sdk.InvalidRequest) as bad:
        client.create_project("Not A Valid Name!")
    assert bad.value.status_code == 400 and "name" in str(bad.value)
    with pytest.raises(ValueError):
        client.mint_token(project_name, name="UPPER CASE")
    with pytest.raises(iron_sdk.InvalidRequest):
        client.usage(project_name, since="yesterday-ish")
    # Conflict.
    with pytest.raises(iron_sdk.Conflict):
        client.create_project(project_name)

    # Authentication.
    with pytest.raises(iron_sdk.AuthError) as auth:
        IronClient(iron_up.control_url, "iron_ak_wrong").list_projects()
    assert auth.value.status_code == 401
    with pytest.raises(iron_sdk.AuthError, match="IRON_API_KEY"):
        IronClient(iron_up.control_url)

    # Unreachable control.
    with pytest.raises(iron_sdk.IronConnectionError, match="cannot reach the Iron control service"):
        IronClient(f"http://127.0.0.1:{free_port()}", "iron_ak_x", timeout=2).list_projects()


def test_defaults_from_environment(iron_up: IronUp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRON_CONTROL_URL", iron_up.control_url + "/")
    monkeypatch.setenv("IRON_API_KEY", iron_up.admin_key)
    monkeypatch.setenv("IRON_PROXY_URL", iron_up.proxy_url)
    c = IronClient()
    assert c.control_url == iron_up.control_url and c.proxy_url == iron_up.proxy_url
    assert isinstance(c.list_projects(), list)


def test_async_client(iron_up: IronUp, project_name: str) -> None:
    async def main() -> None:
        async with AsyncIronClient(iron_up.control_url, iron_up.admin_key) as c:
            await c.create_project(project_name, budget=BudgetConfig(1))
            tokens = await asyncio.gather(*(c.mint_token(project_name, ttl="5m") for _ in range(3)))
            assert len({t.id for t in tokens}) == 3
            assert {t.id for t in await c.list_tokens(project_name)} == {t.id for t in tokens}
            await c.revoke_token(tokens[0])
            assert (await c.get_token(tokens[0].id)).revoked
            assert (await c.budget(project_name)).limit_usd == Decimal("1")
            assert await c.usage(project_name, since="1h") == []
            with pytest.raises(iron_sdk.NotFound):
                await c.budget("no-such-project-xyz")

    asyncio.run(main())
