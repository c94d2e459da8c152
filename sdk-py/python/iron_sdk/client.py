"""The control service client: projects, IC tokens, budgets, usage and providers over the REST
API (``/v1``, ``Authorization: Bearer iron_ak_…``). :class:`IronClient` is synchronous and
thread-safe; :class:`AsyncIronClient` has the same methods as coroutines."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union
from urllib.parse import quote

from . import _iron_sdk
from ._http import Transport
from .budget import BudgetConfig
from .errors import AuthError, InvalidRequest
from .models import BudgetStatus, IcToken, Project, Provider, TokenInfo, UsageRecord

__all__ = ["IronClient", "AsyncIronClient", "DEFAULT_CONTROL_URL", "DEFAULT_PROXY_URL", "TimeArg", "TtlArg"]

DEFAULT_CONTROL_URL = "http://127.0.0.1:7070"
DEFAULT_PROXY_URL = "http://127.0.0.1:8080"

TimeArg = Union[str, datetime, timedelta]
"""A point in time: RFC 3339 text, a duration back from now (``"24h"``, ``timedelta``), or a
``datetime`` (naive = UTC)."""

TtlArg = Union[str, int, timedelta]
"""A token lifetime: ``"30m"``, ``"12h"``, ``"7d"``, seconds as ``int``, or a ``timedelta``
(1 minute to 366 days)."""

def ttl_seconds(ttl: TtlArg) -> int:
    """Validates a lifetime and returns it in seconds (same rules as the control service)."""
    if isinstance(ttl, bool):
        raise InvalidRequest(f"ttl must be a duration such as '7d', got {ttl!r}")
    if isinstance(ttl, timedelta):
        text = f"{int(ttl.total_seconds())}s"
    elif isinstance(ttl, int):
        text = f"{ttl}s"
    elif isinstance(ttl, str):
        text = ttl
    else:
        raise InvalidRequest(f"ttl must be a duration such as '7d', got {type(ttl).__name__}")
    return _iron_sdk.parse_ttl_seconds(text)


def _time_param(name: str, value: Optional[TimeArg]) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return f"{max(0, int(value.total_seconds()))}s"
    if isinstance(value, datetime):
        t = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise InvalidRequest(f"{name} must be RFC 3339 text, a duration such as '24h', a datetime or a timedelta")


def _seg(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{what} must be a non-empty string")
    return quote(value, safe="")


class IronClient:
    """A client of Iron's control service.

    Args:
        control_url: where control listens; default ``$IRON_CONTROL_URL``, else
            ``http://127.0.0.1:7070``.
        api_key: an API key (``iron_ak_…``); default ``$IRON_API_KEY``.
        proxy_url: where agents reach the Iron proxy (used by :func:`~iron_sdk.protect_agent`);
            default ``$IRON_PROXY_URL``, else ``http://127.0.0.1:8080``.
        timeout: seconds per HTTP request.

    Raises:
        AuthError: no API key was given or found in the environment.
    """

    def __init__(
        self,
        control_url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        proxy_url: Optional[str] = None,
        timeout: float = 30.0,
    ) -> None:
        self.control_url = (control_url or os.environ.get("IRON_CONTROL_URL") or DEFAULT_CONTROL_URL).rstrip("/")
        key = api_key or os.environ.get("IRON_API_KEY")
        if not key:
            raise AuthError(
                "no Iron API key: pass IronClient(api_key=...) or set IRON_API_KEY "
                "(`iron up` writes one to DATA_DIR/admin.key)",
                "missing_api_key",
            )
        self.proxy_url = (proxy_url or os.environ.get("IRON_PROXY_URL") or DEFAULT_PROXY_URL).rstrip("/")
        self._http = Transport(self.control_url, key.strip(), timeout, _iron_sdk.__version__)

    def __repr__(self) -> str:
        return f"IronClient(control_url={self.control_url!r}, proxy_url={self.proxy_url!r})"

    def __enter__(self) -> "IronClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (each request uses its own connection); for symmetry."""

    # -- plumbing --------------------------------------------------------------------------

    def _get(self, path: str, params: Optional[Mapping[str, Any]] = None) -> Any:
        return self._http.request("GET", path, params=params)

    def _pages(self, path: str, params: Optional[Mapping[str, Any]] = None, limit: int = 500) -> Iterator[Dict[str, Any]]:
        query: Dict[str, Any] = dict(params or {})
        query["limit"] = limit
        while True:
            page = self._get(path, query)
            for item in page.get("data", []) if isinstance(page, dict) else []:
                yield item
            cursor = page.get("next_cursor") if isinstance(page, dict) else None
            if not cursor:
                return
            query["cursor"] = cursor

    # -- projects --------------------------------------------------------------------------

    def create_project(
        self,
        name: str,
        *,
        budget: Optional[BudgetConfig] = None,
        providers: Optional[Sequence[str]] = None,
        allowed_models: Optional[Sequence[str]] = None,
        pii: Optional[Mapping[str, Any]] = None,
    ) -> Project:
        """Creates a project (admin key). ``name``: 1–64 of ``a-z 0-9 - _``."""
        body: Dict[str, Any] = {"name": name}
        if budget is not None:
            body["budget_usd"] = budget.usd
            body["period"] = budget.period
        if providers is not None:
            body["providers"] = list(providers)
        if allowed_models is not None:
            body["allowed_models"] = list(allowed_models)
        if pii is not None:
            body["pii"] = dict(pii)
        return Project.from_api(self._http.request("POST", "/v1/projects", body=body))

    def get_project(self, project: str) -> Project:
        """A project by id (``prj_…``) or name."""
        return Project.from_api(self._get(f"/v1/projects/{_seg(project, 'project')}"))

    def list_projects(self) -> List[Project]:
        return [Project.from_api(p) for p in self._pages("/v1/projects")]

    def set_budget(self, project: str, budget: Optional[BudgetConfig]) -> Project:
        """Sets (or with ``None`` removes) a project's budget limit."""
        body: Dict[str, Any] = {"budget_usd": None if budget is None else budget.usd}
        if budget is not None:
            body["period"] = budget.period
        return Project.from_api(
            self._http.request("PUT", f"/v1/projects/{_seg(project, 'project')}/budget", body=body)
        )

    def delete_project(self, project: str) -> None:
        self._http.request("DELETE", f"/v1/projects/{_seg(project, 'project')}")

    # -- tokens ----------------------------------------------------------------------------

    def mint_token(
        self,
        project: str,
        name: Optional[str] = None,
        budget: Optional[BudgetConfig] = None,
        ttl: TtlArg = "7d",
    ) -> IcToken:
        """Mints an IC token for ``project`` (id or name).

        ``budget`` is the token's own limit, on top of the project's. ``ttl`` is its lifetime
        (``"30m"``, ``"12h"``, ``"7d"``; 1 minute to 366 days). The secret ``token`` is returned
        once, here; Iron keeps only its id.
        """
        seconds = ttl_seconds(ttl)
        body: Dict[str, Any] = {"ttl": f"{seconds}s"}
        if name is not None:
            body["name"] = name
        if budget is not None:
            body["budget_usd"] = budget.usd
            body["period"] = budget.period
        raw = self._http.request("POST", f"/v1/projects/{_seg(project, 'project')}/tokens", body=body)
        return IcToken.from_api(raw)

    def list_tokens(self, project: Optional[str] = None) -> List[TokenInfo]:
        """Tokens (all, or of one project), revoked ones included (``status``)."""
        if project is not None:
            items = self._pages(f"/v1/projects/{_seg(project, 'project')}/tokens")
        else:
            items = self._pages("/v1/tokens")
        return [TokenInfo.from_api(t) for t in items]

    def get_token(self, token_id: str) -> TokenInfo:
        return TokenInfo.from_api(self._get(f"/v1/tokens/{_seg(token_id, 'token_id')}"))

    def revoke_token(self, token: Union[str, IcToken, TokenInfo]) -> TokenInfo:
        """Revokes a token (by id, or the object); idempotent. Proxies refuse it within ~1 s."""
        token_id = token if isinstance(token, str) else token.id
        return TokenInfo.from_api(self._http.request("DELETE", f"/v1/tokens/{_seg(token_id, 'token_id')}"))

    # -- budgets and usage -----------------------------------------------------------------

    def budget(self, project: str) -> BudgetStatus:
        """The budget of ``project`` in its current period: limit, spent, leased, remaining."""
        return BudgetStatus.from_api(self._get(f"/v1/budgets/{_seg(project, 'project')}"))

    def usage(
        self,
        project: Optional[str] = None,
        since: Optional[TimeArg] = None,
        *,
        until: Optional[TimeArg] = None,
        token: Optional[str] = None,
        model: Optional[str] = None,
    ) -> List[UsageRecord]:
        """Usage events (one per metered request), oldest first, every page fetched."""
        params = {
            "project": project,
            "since": _time_param("since", since),
            "until": _time_param("until", until),
            "token": token,
            "model": model,
        }
        return [UsageRecord.from_api(u) for u in self._pages("/v1/usage", params)]

    # -- providers -------------------------------------------------------------------------

    def create_provider(
        self,
        name: str,
        kind: str,
        base_url: str,
        api_key: str,
        *,
        models: Optional[Sequence[str]] = None,
        priority: Optional[int] = None,
    ) -> Provider:
        """Registers a provider deployment (admin key). The key is write-only."""
        body: Dict[str, Any] = {"name": name, "kind": kind, "base_url": base_url, "api_key": api_key}
        if models is not None:
            body["models"] = list(models)
        if priority is not None:
            body["priority"] = priority
        return Provider.from_api(self._http.request("POST", "/v1/providers", body=body))

    def list_providers(self) -> List[Provider]:
        return [Provider.from_api(p) for p in self._pages("/v1/providers")]

    def delete_provider(self, provider: str) -> None:
        self._http.request("DELETE", f"/v1/providers/{_seg(provider, 'provider')}")


class AsyncIronClient:
    """:class:`IronClient` with coroutine methods (each call runs in a worker thread, so the
    event loop never blocks). Same arguments, same exceptions."""

    def __init__(
        self,
        control_url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        proxy_url: Optional[str] = None,
        timeout: float = 30.0,
    ) -> None:
        self.sync = IronClient(control_url, api_key, proxy_url=proxy_url, timeout=timeout)

    @property
    def control_url(self) -> str:
        return self.sync.control_url

    @property
    def proxy_url(self) -> str:
        return self.sync.proxy_url

    def __repr__(self) -> str:
        return f"AsyncIronClient(control_url={self.control_url!r}, proxy_url={self.proxy_url!r})"

    async def __aenter__(self) -> "AsyncIronClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sync.close()

    async def create_project(
        self,
        name: str,
        *,
        budget: Optional[BudgetConfig] = None,
        providers: Optional[Sequence[str]] = None,
        allowed_models: Optional[Sequence[str]] = None,
        pii: Optional[Mapping[str, Any]] = None,
    ) -> Project:
        return await asyncio.to_thread(
            self.sync.create_project, name, budget=budget, providers=providers, allowed_models=allowed_models, pii=pii
        )

    async def get_project(self, project: str) -> Project:
        return await asyncio.to_thread(self.sync.get_project, project)

    async def list_projects(self) -> List[Project]:
        return await asyncio.to_thread(self.sync.list_projects)

    async def set_budget(self, project: str, budget: Optional[BudgetConfig]) -> Project:
        return await asyncio.to_thread(self.sync.set_budget, project, budget)

    async def delete_project(self, project: str) -> None:
        await asyncio.to_thread(self.sync.delete_project, project)

    async def mint_token(
        self,
        project: str,
        name: Optional[str] = None,
        budget: Optional[BudgetConfig] = None,
        ttl: TtlArg = "7d",
    ) -> IcToken:
        return await asyncio.to_thread(self.sync.mint_token, project, name, budget, ttl)

    async def list_tokens(self, project: Optional[str] = None) -> List[TokenInfo]:
        return await asyncio.to_thread(self.sync.list_tokens, project)

    async def get_token(self, token_id: str) -> TokenInfo:
        return await asyncio.to_thread(self.sync.get_token, token_id)

    async def revoke_token(self, token: Union[str, IcToken, TokenInfo]) -> TokenInfo:
        return await asyncio.to_thread(self.sync.revoke_token, token)

    async def budget(self, project: str) -> BudgetStatus:
        return await asyncio.to_thread(self.sync.budget, project)

    async def usage(
        self,
        project: Optional[str] = None,
        since: Optional[TimeArg] = None,
        *,
        until: Optional[TimeArg] = None,
        token: Optional[str] = None,
        model: Optional[str] = None,
    ) -> List[UsageRecord]:
        return await asyncio.to_thread(self.sync.usage, project, since, until=until, token=token, model=model)

    async def create_provider(
        self,
        name: str,
        kind: str,
        base_url: str,
        api_key: str,
        *,
        models: Optional[Sequence[str]] = None,
        priority: Optional[int] = None,
    ) -> Provider:
        return await asyncio.to_thread(
            self.sync.create_provider, name, kind, base_url, api_key, models=models, priority=priority
        )

    async def list_providers(self) -> List[Provider]:
        return await asyncio.to_thread(self.sync.list_providers)

    async def delete_provider(self, provider: str) -> None:
        await asyncio.to_thread(self.sync.delete_provider, provider)

