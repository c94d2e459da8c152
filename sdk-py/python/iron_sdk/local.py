"""An Iron proxy embedded in this process, for local use and tests: no control service, no
other process. The real proxy (budgets, PII redaction, metering, key swap) runs in static mode
on a background thread, on ``127.0.0.1`` and an ephemeral port."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from . import _iron_sdk
from .budget import Amount, BudgetConfig, usd
from .client import TtlArg, ttl_seconds
from .errors import InvalidRequest
from .models import IcToken, UsageRecord, from_unix

__all__ = ["LocalProxy", "PiiArg", "provider_keys_from_env"]

PiiArg = Union[None, bool, Mapping[str, Any], Sequence[str]]
"""PII handling of a :class:`LocalProxy`:

- ``None`` or ``True``: Iron's default, every type redacted reversibly (the provider sees
  ``[EMAIL_1]``, the answer gets the original back);
- ``False``: PII stage off;
- a list of type names: redact only those (others pass);
- a policy mapping, as in a project: ``{"request": {"EMAIL": "block"}, "response": {...},
  "reversible": True}`` (actions ``redact``, ``block``, ``allow``).
"""

# Environment variables LocalProxy reads provider keys and upstreams from by default.
_ENV_PROVIDERS = (
    ("openai", "OPENAI_API_KEY", "OPENAI_BASE_URL"),
    ("anthropic", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
)


def provider_keys_from_env(environ: Optional[Mapping[str, str]] = None) -> "tuple[Dict[str, str], Dict[str, str]]":
    """``(provider_keys, upstream_base_urls)`` from ``OPENAI_API_KEY``/``OPENAI_BASE_URL`` and
    ``ANTHROPIC_API_KEY``/``ANTHROPIC_BASE_URL``."""
    env = os.environ if environ is None else environ
    keys: Dict[str, str] = {}
    urls: Dict[str, str] = {}
    for kind, key_var, url_var in _ENV_PROVIDERS:
        key = env.get(key_var)
        if key:
            keys[kind] = key
            url = env.get(url_var)
            if url:
                urls[kind] = url
    return keys, urls


def _pii_policy(pii: PiiArg) -> "tuple[Optional[str], bool]":
    """``(policy JSON or None, enabled)``."""
    if pii is None or pii is True:
        return None, True
    if pii is False:
        return None, False
    if isinstance(pii, Mapping):
        return json.dumps(dict(pii)), True
    if isinstance(pii, str):
        pii = [pii]
    if isinstance(pii, Sequence):
        wanted = {str(t).upper() for t in pii}
        unknown = sorted(wanted - set(_iron_sdk.pii_types()))
        if unknown:
            raise InvalidRequest(
                f"pii: unknown PII type {unknown[0]!r} (expected one of {', '.join(_iron_sdk.pii_types())})"
            )
        request = {t: ("redact" if t in wanted else "allow") for t in _iron_sdk.pii_types()}
        return json.dumps({"request": request}), True
    raise InvalidRequest(f"pii must be None, a bool, a list of PII types or a policy mapping, got {type(pii).__name__}")


class LocalProxy:
    """The Iron proxy, in this process.

    Args:
        provider_keys: provider kind → API key (``{"openai": "sk-…", "anthropic": "sk-ant-…"}``;
            kinds ``openai``, ``anthropic``, ``openai-compatible``, ``azure-openai``). Default:
            ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY`` from the environment.
        budget: total spending limit of everything through this proxy (``BudgetConfig`` with
            period ``"total"``, or an amount); default unlimited.
        pii: see :data:`PiiArg`; default: every type redacted reversibly.
        upstream_base_urls: provider kind → base URL (e.g. a mock, or an OpenAI-compatible
            server); default the providers' public URLs (and, with ``provider_keys`` from the
            environment, ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL``).
        project: the project id tokens carry (shows up in usage).
        ttl: lifetime of :attr:`api_key`.
        threads: proxy worker threads.
        shutdown_grace: seconds :meth:`stop` gives requests still in flight (default 0: stop
            at once; the proxy waits the whole grace even when idle).

    Use as a context manager, or call :meth:`stop`. Agents use :attr:`base_url` and
    :attr:`api_key` (or :meth:`env`) exactly like an OpenAI/Anthropic endpoint.
    """

    def __init__(
        self,
        provider_keys: Optional[Mapping[str, str]] = None,
        *,
        budget: Union[BudgetConfig, Amount, None] = None,
        pii: PiiArg = None,
        upstream_base_urls: Optional[Mapping[str, str]] = None,
        project: str = "local",
        ttl: TtlArg = "1d",
        threads: int = 1,
        shutdown_grace: int = 0,
    ) -> None:
        if provider_keys is None:
            provider_keys, env_urls = provider_keys_from_env()
            if upstream_base_urls is None:
                upstream_base_urls = env_urls
        if not provider_keys:
            raise InvalidRequest(
                "LocalProxy needs at least one provider key: pass provider_keys={'openai': 'sk-…'} "
                "or set OPENAI_API_KEY / ANTHROPIC_API_KEY"
            )
        if budget is not None and not isinstance(budget, BudgetConfig):
            budget = BudgetConfig(budget)
        if budget is not None and budget.period != "total":
            raise InvalidRequest(
                f"LocalProxy budgets are totals for the proxy's lifetime (period='total'); "
                f"period={budget.period!r} needs the control service (IronClient)"
            )
        ttl_s = ttl_seconds(ttl)
        policy, pii_enabled = _pii_policy(pii)
        self.budget: Optional[BudgetConfig] = budget
        self._native = _iron_sdk.LocalProxy(
            dict(provider_keys),
            upstream_base_urls=dict(upstream_base_urls) if upstream_base_urls else None,
            project=project,
            budget_usd=budget.usd if budget is not None else None,
            pii_policy_json=policy,
            pii_enabled=pii_enabled,
            threads=threads,
            shutdown_grace_secs=shutdown_grace,
        )
        self.token: IcToken = self.mint_token(ttl_s)

    # -- where agents connect -------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the proxy's root (Anthropic-style base URL)."""
        return self._native.url

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the OpenAI-style base URL (``OPENAI_BASE_URL``)."""
        return self._native.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The Anthropic-style base URL (``ANTHROPIC_BASE_URL``), without ``/v1``."""
        return self._native.url

    @property
    def api_key(self) -> str:
        """An IC token this proxy accepts (signed by a key generated in this process)."""
        return self.token.token

    @property
    def admin_url(self) -> str:
        """The proxy's admin server (``/metrics``, ``/healthz``, ``/readyz``)."""
        return self._native.admin_url

    @property
    def project(self) -> str:
        return self._native.project

    @property
    def running(self) -> bool:
        return self._native.running

    def env(self) -> Dict[str, str]:
        """The variables that point the official SDKs at this proxy."""
        return {
            "OPENAI_BASE_URL": self.base_url,
            "OPENAI_API_KEY": self.api_key,
            "ANTHROPIC_BASE_URL": self.anthropic_base_url,
            "ANTHROPIC_API_KEY": self.api_key,
        }

    def mint_token(self, ttl: TtlArg = "1d") -> IcToken:
        """Another IC token for this proxy (all tokens share its budget)."""
        token_id, token, exp = self._native.mint(ttl_seconds(ttl))
        return IcToken(id=token_id, token=token, project=self.project, expires_at=from_unix(exp))

    # -- money ----------------------------------------------------------------------------

    @property
    def spent_microdollars(self) -> int:
        """Spent so far, in micro-dollars.

        Counts every settled request. A request settles right after its answer reaches the
        client, so reading this waits up to 0.25 s while requests are in flight (no wait
        otherwise); a stream still running counts once it ends."""
        return self._native.spent_microdollars()

    @property
    def spent_usd(self) -> Decimal:
        """Spent so far, in USD (exact); see :attr:`spent_microdollars`."""
        return usd(self.spent_microdollars)

    @property
    def remaining_usd(self) -> Optional[Decimal]:
        """What is left of the budget (``None`` = unlimited)."""
        limit = self._native.limit_microdollars
        if limit is None:
            return None
        return usd(max(0, limit - self.spent_microdollars))

    def usage(self) -> List[UsageRecord]:
        """Usage events reported so far (the proxy reports every second, and at :meth:`stop`)."""
        return [UsageRecord.from_local_event(e) for e in json.loads(self._native.usage_json())]

    # -- lifetime -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops the proxy (requests in flight get ``shutdown_grace`` seconds), settles spend and
        joins its thread. Idempotent."""
        self._native.stop()

    close = stop

    def __enter__(self) -> "LocalProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalProxy({self.base_url!r}, project={self.project!r}, {state})"
