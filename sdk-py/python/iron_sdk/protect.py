"""``protect_agent``: run an agent (a function, or a ``with`` block) behind Iron with its own
budget.

For the duration of the call a scoped IC token exists — minted by the control service when
one is configured, else by an embedded :class:`~iron_sdk.LocalProxy` started for the call —
and the standard variables ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` and
``ANTHROPIC_BASE_URL``/``ANTHROPIC_API_KEY`` point at Iron, so the official SDKs (created
inside the call) go through it unchanged. A refusal for budget (HTTP 402 ``budget_exceeded``,
or a stream cut off for budget) surfaces as :class:`~iron_sdk.BudgetExceeded`. Afterwards the
variables are restored, the token is revoked (control) or the proxy stopped (local).

**Environment variables are process-global.** Scopes entered concurrently (threads, asyncio
tasks) share one environment: a lock keeps it consistent, and it always shows the most
recently entered scope that is still active; when the last scope ends, the original values
come back. Code that runs several agents at once should read its own scope's values from
:func:`current_scope` (per thread and per asyncio task) and pass them to its clients
explicitly, e.g. ``openai.OpenAI(**current_scope().openai_kwargs())``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import re
import threading
import warnings
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar, Union, cast

from .budget import Amount, BudgetConfig
from .client import IronClient, TtlArg, ttl_seconds
from .errors import BudgetExceeded, Conflict, IronError, NotFound
from .local import LocalProxy, PiiArg, provider_keys_from_env
from .models import IcToken

__all__ = ["protect_agent", "AgentScope", "current_scope", "as_budget_exceeded", "ENV_VARS"]

F = TypeVar("F", bound=Callable[..., Any])

ENV_VARS = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")
"""The variables a scope sets (and restores)."""

_BUDGET_CODE = "budget_exceeded"
# Exception classes from these packages carry a provider/Iron HTTP status: a 402 there is Iron's.
_SDK_MODULES = ("openai", "anthropic", "httpx")


@dataclass
class AgentScope:
    """What a protected call runs with."""

    token: IcToken
    """The scoped IC token (``token.token`` is the secret)."""
    base_url: str
    """OpenAI-style base URL of the Iron proxy (``…/v1``)."""
    anthropic_base_url: str
    """Anthropic-style base URL of the Iron proxy."""
    project: str
    budget: Optional[BudgetConfig]
    mode: str
    """``"control"`` (token minted by the control service) or ``"local"`` (embedded proxy)."""
    local_proxy: Optional[LocalProxy] = field(default=None, repr=False)

    @property
    def api_key(self) -> str:
        return self.token.token

    def env(self) -> Dict[str, str]:
        """The variables this scope sets."""
        return {
            "OPENAI_BASE_URL": self.base_url,
            "OPENAI_API_KEY": self.api_key,
            "ANTHROPIC_BASE_URL": self.anthropic_base_url,
            "ANTHROPIC_API_KEY": self.api_key,
        }

    def openai_kwargs(self) -> Dict[str, str]:
        """``openai.OpenAI(**scope.openai_kwargs())``."""
        return {"base_url": self.base_url, "api_key": self.api_key}

    def anthropic_kwargs(self) -> Dict[str, str]:
        """``anthropic.Anthropic(**scope.anthropic_kwargs())``."""
        return {"base_url": self.anthropic_base_url, "api_key": self.api_key}

    @property
    def spent_usd(self) -> Optional[Decimal]:
        """Spent in this scope so far (embedded proxy only; with control, see
        ``IronClient.budget`` / ``IronClient.usage(token=…)``)."""
        return self.local_proxy.spent_usd if self.local_proxy is not None else None


_current: "contextvars.ContextVar[Optional[AgentScope]]" = contextvars.ContextVar("iron_sdk_scope", default=None)


def current_scope() -> Optional[AgentScope]:
    """The innermost active scope of this thread / asyncio task, if any."""
    return _current.get()


# -- the process environment ---------------------------------------------------------------

_env_lock = threading.RLock()
_active: List[AgentScope] = []
_saved: Dict[str, Optional[str]] = {}


def _apply(values: Mapping[str, Optional[str]]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _agent_environ() -> Dict[str, str]:
    """The agent's own provider environment: as it was before the first active scope (of any
    thread or task) replaced it with an Iron proxy's URL and token."""
    with _env_lock:
        source: Mapping[str, Optional[str]] = _saved if _active else os.environ
        values = {k: source.get(k) for k in ENV_VARS}
    return {k: v for k, v in values.items() if v is not None}


def _env_push(scope: AgentScope) -> None:
    with _env_lock:
        if not _active:
            _saved.clear()
            _saved.update({k: os.environ.get(k) for k in ENV_VARS})
        _active.append(scope)
        _apply(scope.env())


def _env_pop(scope: AgentScope) -> None:
    with _env_lock:
        for i in range(len(_active) - 1, -1, -1):
            if _active[i] is scope:
                del _active[i]
                break
        if _active:
            _apply(_active[-1].env())
        else:
            _apply(_saved)
            _saved.clear()


# -- budget errors from the provider SDKs --------------------------------------------------


def _from_sdk(exc: BaseException) -> bool:
    return any(c.__module__.split(".")[0] in _SDK_MODULES for c in type(exc).__mro__)


def as_budget_exceeded(exc: BaseException) -> Optional[BudgetExceeded]:
    """The :class:`BudgetExceeded` an exception stands for, or ``None``.

    Recognised without importing any SDK: an ``x-iron-error: budget_exceeded`` header on
    ``exc.response``; an error body whose ``code``/``type`` is ``budget_exceeded`` (also the
    SSE error event of a stream cut off for budget); or status 402 on an ``openai`` /
    ``anthropic`` / ``httpx`` exception (``APIStatusError``, ``HTTPStatusError``).
    """
    if isinstance(exc, BudgetExceeded):
        return exc
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        status = getattr(response, "status_code", None)
    headers = getattr(response, "headers", None)
    header: Optional[str] = None
    try:
        header = headers.get("x-iron-error") if headers is not None else None
    except Exception:  # noqa: BLE001 - foreign header objects
        header = None
    body = getattr(exc, "body", None)
    err: Any = body.get("error", body) if isinstance(body, dict) else None
    code = None
    message = None
    if isinstance(err, dict):
        code = err.get("code") if err.get("code") == _BUDGET_CODE else err.get("type")
        message = err.get("message")
    hit = header == _BUDGET_CODE or code == _BUDGET_CODE or (status == 402 and _from_sdk(exc))
    if not hit:
        return None
    text = message if isinstance(message, str) and message else str(exc) or "budget exceeded"
    return BudgetExceeded(text, _BUDGET_CODE, status_code=status if isinstance(status, int) else None, body=body)


# -- the guard -----------------------------------------------------------------------------

_NAME_CHARS = re.compile(r"[^a-z0-9_-]+")


def _token_name(label: Optional[str]) -> Optional[str]:
    """A valid control token name from a function name (or ``None``)."""
    if not label:
        return None
    name = _NAME_CHARS.sub("-", label.lower()).strip("-_")[:64]
    if not name or name.startswith(("prj_", "prv_", "tok_", "ak_")):
        return None
    return name


class _Entered:
    """One entry of a guard: the scope plus what to undo."""

    def __init__(self, scope: AgentScope, client: Optional[IronClient], revoke: bool) -> None:
        self.scope = scope
        self.client = client
        self.revoke = revoke
        self.ctx_token: "Optional[contextvars.Token[Optional[AgentScope]]]" = None

    def close(self) -> None:
        scope = self.scope
        if scope.local_proxy is not None:
            scope.local_proxy.stop()
        elif self.client is not None and self.revoke:
            try:
                self.client.revoke_token(scope.token.id)
            except IronError as e:
                warnings.warn(f"iron_sdk: could not revoke scoped token {scope.token.id}: {e}", stacklevel=3)


# Scopes entered in this thread / task, innermost last, tagged with their guard's id.
_entries: "contextvars.ContextVar[Tuple[Tuple[int, _Entered], ...]]" = contextvars.ContextVar(
    "iron_sdk_entries", default=()
)


class protect_agent:  # noqa: N801 - used as a decorator, named like a function
    """Runs a function (sync, async, generator) or a ``with`` block behind Iron with a budget.

    Args:
        budget: the scope's limit (``BudgetConfig`` or an amount in USD). With control, it is
            the scoped token's own budget (period as given); with the embedded proxy, the total
            for the call.
        project: with control, the project (id or name) of the token; default
            ``$IRON_PROJECT``, else ``"default"`` (created if missing and the key may). With the
            embedded proxy, the project id in usage records (default ``"local"``).
        client: an :class:`IronClient`; default one from the environment when ``IRON_API_KEY``
            is set, else the embedded proxy is used.
        local: ``True`` forces the embedded proxy, ``False`` forces control.
        ttl: lifetime of the scoped token (default ``"1d"``).
        name: token name (default: the decorated function's name).
        provider_keys, upstream_base_urls, pii: embedded proxy only (see :class:`LocalProxy`);
            default provider keys and upstreams: the environment's ``OPENAI_*`` /
            ``ANTHROPIC_*``, or the enclosing scope when scopes nest.
        revoke: revoke the control-minted token when the scope ends (default ``True``).

    Examples::

        @protect_agent(budget=BudgetConfig(max_usd=5.0))
        def run():
            return openai.OpenAI().chat.completions.create(...)

        async with protect_agent(budget=BudgetConfig(1.0)) as scope:
            ...
    """

    def __init__(
        self,
        budget: Union[BudgetConfig, Amount, None] = None,
        project: Optional[str] = None,
        *,
        client: Optional[IronClient] = None,
        local: Optional[bool] = None,
        ttl: TtlArg = "1d",
        name: Optional[str] = None,
        provider_keys: Optional[Mapping[str, str]] = None,
        upstream_base_urls: Optional[Mapping[str, str]] = None,
        pii: PiiArg = None,
        revoke: bool = True,
    ) -> None:
        if budget is not None and not isinstance(budget, BudgetConfig):
            budget = BudgetConfig(budget)
        self.budget: Optional[BudgetConfig] = budget
        self.project = project
        self.client = client
        self.local = local
        self.ttl = ttl
        self._ttl_seconds = ttl_seconds(ttl)
        self.name = name
        self.provider_keys = dict(provider_keys) if provider_keys is not None else None
        self.upstream_base_urls = dict(upstream_base_urls) if upstream_base_urls is not None else None
        self.pii = pii
        self.revoke = revoke
        self._label: Optional[str] = None

    # -- entering and leaving ---------------------------------------------------------------

    def _use_control(self) -> bool:
        if self.local is not None:
            return not self.local
        return self.client is not None or bool(os.environ.get("IRON_API_KEY"))

    def _open(self) -> _Entered:
        if self._use_control():
            client = self.client or IronClient()
            token = self._mint(client)
            scope = AgentScope(
                token=token,
                base_url=client.proxy_url + "/v1",
                anthropic_base_url=client.proxy_url,
                project=token.project,
                budget=self.budget,
                mode="control",
            )
            return _Entered(scope, client, self.revoke)
        proxy = self._start_local()
        scope = AgentScope(
            token=proxy.token,
            base_url=proxy.base_url,
            anthropic_base_url=proxy.anthropic_base_url,
            project=proxy.project,
            budget=self.budget,
            mode="local",
            local_proxy=proxy,
        )
        return _Entered(scope, None, self.revoke)

    def _mint(self, client: IronClient) -> IcToken:
        explicit = self.project or os.environ.get("IRON_PROJECT")
        project = explicit or "default"
        name = self.name or _token_name(self._label)
        try:
            return client.mint_token(project, name=name, budget=self.budget, ttl=self._ttl_seconds)
        except NotFound:
            if explicit:
                raise
            try:
                client.create_project(project)
            except Conflict:  # created meanwhile by another scope
                pass
            return client.mint_token(project, name=name, budget=self.budget, ttl=self._ttl_seconds)

    def _start_local(self) -> LocalProxy:
        keys, urls = self.provider_keys, self.upstream_base_urls
        if keys is None:
            outer = current_scope()
            if outer is not None:
                # Nested: the enclosing scope's Iron is this proxy's upstream.
                keys = {"openai": outer.api_key, "anthropic": outer.api_key}
                env_urls = {"openai": outer.base_url, "anthropic": outer.anthropic_base_url}
            else:
                # Not `os.environ`: a scope of another thread may have set it to its own proxy.
                keys, env_urls = provider_keys_from_env(_agent_environ())
            if urls is None:
                urls = env_urls
        budget = self.budget
        if budget is not None and budget.period != "total":
            # One call is one budget window for the embedded proxy.
            budget = BudgetConfig(budget.max_usd, "total")
        return LocalProxy(
            keys,
            budget=budget,
            pii=self.pii,
            upstream_base_urls=urls,
            project=self.project or "local",
            ttl=self._ttl_seconds,
        )

    def _enter(self, entered: _Entered) -> AgentScope:
        entered.ctx_token = _current.set(entered.scope)
        _env_push(entered.scope)
        _entries.set(_entries.get() + ((id(self), entered),))
        return entered.scope

    def _leave(self) -> Optional[_Entered]:
        stack = _entries.get()
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] == id(self):
                entered = stack[i][1]
                _entries.set(stack[:i] + stack[i + 1 :])
                break
        else:
            return None
        _env_pop(entered.scope)
        if entered.ctx_token is not None:
            try:
                _current.reset(entered.ctx_token)
            except ValueError:  # left in another context than entered
                _current.set(None)
        return entered

    def __enter__(self) -> AgentScope:
        return self._enter(self._open())

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        entered = self._leave()
        if entered is not None:
            entered.close()
        if exc is not None and not isinstance(exc, BudgetExceeded):
            translated = as_budget_exceeded(exc)
            if translated is not None:
                raise translated from exc

    async def __aenter__(self) -> AgentScope:
        entered = await asyncio.to_thread(self._open)
        return self._enter(entered)

    async def __aexit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        entered = self._leave()
        if entered is not None:
            await asyncio.to_thread(entered.close)
        if exc is not None and not isinstance(exc, BudgetExceeded):
            translated = as_budget_exceeded(exc)
            if translated is not None:
                raise translated from exc

    # -- as a decorator ---------------------------------------------------------------------

    def _fresh(self) -> "protect_agent":
        """A guard with the same settings, for one call (calls may overlap)."""
        g = protect_agent(
            self.budget,
            self.project,
            client=self.client,
            local=self.local,
            ttl=self.ttl,
            name=self.name,
            provider_keys=self.provider_keys,
            upstream_base_urls=self.upstream_base_urls,
            pii=self.pii,
            revoke=self.revoke,
        )
        g._label = self._label
        return g

    def __call__(self, fn: F) -> F:
        # Settings of this decoration (the same guard may decorate several functions).
        template = self._fresh()
        template._label = getattr(fn, "__name__", None)
        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with template._fresh():
                    async for item in fn(*args, **kwargs):
                        yield item

            return cast(F, agen_wrapper)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with template._fresh():
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                with template._fresh():
                    return (yield from fn(*args, **kwargs))

            return cast(F, gen_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with template._fresh():
                return fn(*args, **kwargs)

        return cast(F, wrapper)

    def __repr__(self) -> str:
        return f"protect_agent(budget={self.budget!r}, project={self.project!r})"
