"""Typed views of what the control service returns.

Every model keeps the decoded JSON in ``raw`` (not shown in ``repr``, not compared), so fields
the server adds later are reachable before the SDK names them. Money is ``Decimal`` dollars
plus integer micro-dollars; times are timezone-aware ``datetime`` in UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Dict, List, Mapping, Optional

from .budget import parse_decimal, to_microdollars

__all__ = ["IcToken", "TokenInfo", "Project", "BudgetStatus", "UsageRecord", "Provider", "PiiMatch"]

_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value: object) -> Optional[datetime]:
    """An RFC 3339 time (``2025-01-02T03:04:05Z``, any fraction) as an aware ``datetime``."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Python 3.9's fromisoformat wants 3 or 6 fraction digits.
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def from_unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _micros(raw: Mapping[str, Any], micro_key: str, usd_key: str) -> Optional[int]:
    v = raw.get(micro_key)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    s = raw.get(usd_key)
    if s is None:
        return None
    return to_microdollars(str(s), usd_key)


def _mask(token: str) -> str:
    return f"{token[:3]}…{token[-4:]}" if len(token) > 12 else "ic_…"


@dataclass(frozen=True)
class IcToken:
    """A freshly minted IC token. ``token`` is the secret: Iron shows it once and stores only
    its id, so keep it now. ``repr()`` masks it."""

    id: str
    token: str = field(repr=False)
    project: str
    project_name: Optional[str] = None
    name: Optional[str] = None
    expires_at: Optional[datetime] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, raw: Dict[str, Any]) -> "IcToken":
        return cls(
            id=str(raw.get("id", "")),
            token=str(raw.get("token", "")),
            project=str(raw.get("project", "")),
            project_name=raw.get("project_name"),
            name=raw.get("name"),
            expires_at=parse_time(raw.get("expires_at")),
            raw=raw,
        )

    @property
    def masked(self) -> str:
        """``ic_…wxyz``: safe to log."""
        return _mask(self.token)

    def __str__(self) -> str:
        return f"IcToken {self.id} ({self.masked}) for {self.project_name or self.project}"


@dataclass(frozen=True)
class TokenInfo:
    """An IC token as listed (the secret itself is never returned after minting)."""

    id: str
    project: str
    name: Optional[str]
    status: str
    budget_usd: Optional[Decimal]
    period: Optional[str]
    kid: Optional[str]
    created_at: Optional[datetime]
    expires_at: Optional[datetime]
    revoked_at: Optional[datetime]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, raw: Dict[str, Any]) -> "TokenInfo":
        return cls(
            id=str(raw.get("id", "")),
            project=str(raw.get("project", "")),
            name=raw.get("name"),
            status=str(raw.get("status", "")),
            budget_usd=parse_decimal(raw.get("budget_usd")),
            period=raw.get("period"),
            kid=raw.get("kid"),
            created_at=parse_time(raw.get("created_at")),
            expires_at=parse_time(raw.get("expires_at")),
            revoked_at=parse_time(raw.get("revoked_at")),
            raw=raw,
        )

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None or self.status == "revoked"


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    budget_usd: Optional[Decimal]
    period: Optional[str]
    providers: List[str]
    allowed_models: List[str]
    pii: Optional[Dict[str, Any]]
    created_at: Optional[datetime]
    updated_at: Optional[datetime]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, raw: Dict[str, Any]) -> "Project":
        return cls(
            id=str(raw.get("id", "")),
            name=str(raw.get("name", "")),
            budget_usd=parse_decimal(raw.get("budget_usd")),
            period=raw.get("period"),
            providers=list(raw.get("providers") or []),
            allowed_models=list(raw.get("allowed_models") or []),
            pii=raw.get("pii"),
            created_at=parse_time(raw.get("created_at")),
            updated_at=parse_time(raw.get("updated_at")),
            raw=raw,
        )


@dataclass(frozen=True)
class BudgetStatus:
    """A project's budget in its current period. ``None`` limit/remaining = unlimited."""

    project: str
    project_name: str
    period: Optional[str]
    limit_usd: Optional[Decimal]
    spent_usd: Decimal
    leased_usd: Decimal
    remaining_usd: Optional[Decimal]
    limit_microdollars: Optional[int]
    spent_microdollars: int
    leased_microdollars: int
    remaining_microdollars: Optional[int]
    active_leases: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, raw: Dict[str, Any]) -> "BudgetStatus":
        return cls(
            project=str(raw.get("project", "")),
            project_name=str(raw.get("project_name", "")),
            period=raw.get("period"),
            limit_usd=parse_decimal(raw.get("limit_usd")),
            spent_usd=parse_decimal(raw.get("spent_usd")) or Decimal(0),
            leased_usd=parse_decimal(raw.get("leased_usd")) or Decimal(0),
            remaining_usd=parse_decimal(raw.get("remaining_usd")),
            limit_microdollars=_micros(raw, "limit_microdollars", "limit_usd"),
            spent_microdollars=_micros(raw, "spent_microdollars", "spent_usd") or 0,
            leased_microdollars=_micros(raw, "leased_microdollars", "leased_usd") or 0,
            remaining_microdollars=_micros(raw, "remaining_microdollars", "remaining_usd"),
            active_leases=raw.get("active_leases"),
            raw=raw,
        )


@dataclass(frozen=True)
class UsageRecord:
    """One metered request, as reported by a proxy."""

    id: Optional[str]
    time: Optional[datetime]
    project: str
    token: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cost_usd: Decimal
    cost_microdollars: int
    status: Optional[int]
    cut_off: bool
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, raw: Dict[str, Any]) -> "UsageRecord":
        return cls(
            id=raw.get("id"),
            time=parse_time(raw.get("time")),
            project=str(raw.get("project", "")),
            token=str(raw.get("token", "")),
            provider=str(raw.get("provider", "")),
            model=str(raw.get("model", "")),
            input_tokens=int(raw.get("input_tokens") or 0),
            output_tokens=int(raw.get("output_tokens") or 0),
            cached_input_tokens=int(raw.get("cached_input_tokens") or 0),
            cache_write_tokens=int(raw.get("cache_write_tokens") or 0),
            cost_usd=parse_decimal(raw.get("cost_usd")) or Decimal(0),
            cost_microdollars=_micros(raw, "cost_microdollars", "cost_usd") or 0,
            status=raw.get("status"),
            cut_off=bool(raw.get("cut_off", False)),
            raw=raw,
        )

    @classmethod
    def from_local_event(cls, ev: Dict[str, Any]) -> "UsageRecord":
        """A usage event of the embedded proxy (``LocalProxy.usage()``)."""
        micros = int(ev.get("cost") or 0)
        at_ms = ev.get("at_ms")
        return cls(
            id=ev.get("id"),
            time=datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc) if isinstance(at_ms, int) else None,
            project=str(ev.get("project_id", "")),
            token=str(ev.get("token_id", "")),
            provider=str(ev.get("provider_id", "")),
            model=str(ev.get("model", "")),
            input_tokens=int(ev.get("input_tokens") or 0),
            output_tokens=int(ev.get("output_tokens") or 0),
            cached_input_tokens=int(ev.get("cached_input_tokens") or 0),
            cache_write_tokens=int(ev.get("cache_write_tokens") or 0),
            cost_usd=Decimal(micros) / Decimal(1_000_000),
            cost_microdollars=micros,
            status=ev.get("status"),
            cut_off=bool(ev.get("cut_off", False)),
            raw=ev,
        )


@dataclass(frozen=True)
class Provider:
    """A provider deployment (its key is write-only: only a masked form is returned)."""

    id: str
    name: str
    kind: str
    base_url: str
    models: List[str]
    priority: int
    api_key_masked: Optional[str]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, raw: Dict[str, Any]) -> "Provider":
        return cls(
            id=str(raw.get("id", "")),
            name=str(raw.get("name", "")),
            kind=str(raw.get("kind", "")),
            base_url=str(raw.get("base_url", "")),
            models=list(raw.get("models") or []),
            priority=int(raw.get("priority") or 0),
            api_key_masked=raw.get("api_key_masked"),
            raw=raw,
        )


@dataclass(frozen=True)
class PiiMatch:
    """PII found by :func:`iron_sdk.detect`: ``text[start:end]`` is of type ``type``."""

    type: str
    start: int
    end: int
    text: str = field(repr=False)
