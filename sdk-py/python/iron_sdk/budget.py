"""Budgets and money.

Iron counts money in integer micro-dollars (1 USD = 1,000,000). The SDK accepts amounts as
``float``, ``int``, ``Decimal`` or a decimal string, converts them exactly and sends decimal
strings on the wire (``"12.5"``), never floats. Amounts read back are ``decimal.Decimal``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Literal, Optional, Union

from . import _iron_sdk
from .errors import InvalidRequest

__all__ = ["BudgetConfig", "Period", "PERIODS", "Amount", "to_microdollars", "usd_string", "usd"]

Period = Literal["total", "daily", "monthly"]
"""How often a budget resets: never (``"total"``), each UTC day or each UTC month."""

PERIODS: "tuple[Period, ...]" = ("total", "daily", "monthly")

Amount = Union[float, int, Decimal, str]
"""A dollar amount: ``12.5``, ``12``, ``Decimal("12.50")`` or ``"12.50"``."""

_MICRO = Decimal("0.000001")


def to_microdollars(amount: Amount, what: str = "amount") -> int:
    """``amount`` in micro-dollars, exactly.

    Strings and ``Decimal`` must be exact (at most 6 decimals); a ``float`` is read as the
    shortest decimal that round-trips (``0.1`` is ``"0.1"``) and rounded to the nearest
    micro-dollar. Negative, NaN, infinite and amounts above 1e9 USD raise
    :class:`~iron_sdk.InvalidRequest`.
    """
    if isinstance(amount, bool) or not isinstance(amount, (int, float, Decimal, str)):
        raise InvalidRequest(
            f"{what} must be a number of dollars (float, int, Decimal or str), got {type(amount).__name__}"
        )
    if isinstance(amount, float):
        if math.isnan(amount) or math.isinf(amount):
            raise InvalidRequest(f"{what} must be a finite number of dollars, got {amount!r}")
        if amount < 0:
            raise InvalidRequest(f"{what} must not be negative (got {amount!r})")
        text = format(Decimal(repr(amount)).quantize(_MICRO, rounding=ROUND_HALF_EVEN), "f")
    elif isinstance(amount, Decimal):
        if not amount.is_finite():
            raise InvalidRequest(f"{what} must be a finite number of dollars, got {amount}")
        text = format(amount, "f")
    else:
        text = str(amount).strip()
    if text.startswith("-"):
        raise InvalidRequest(f"{what} must not be negative (got {amount!r})")
    try:
        return _iron_sdk.parse_usd_microdollars(text)
    except InvalidRequest as e:
        raise InvalidRequest(f"{what}: {e.message}", e.code) from None


def usd_string(microdollars: int) -> str:
    """The exact decimal string of an amount (``12500000`` → ``"12.5"``), as sent to Iron."""
    whole, frac = divmod(int(microdollars), 1_000_000)
    if frac == 0:
        return str(whole)
    return f"{whole}.{frac:06d}".rstrip("0")


def usd(microdollars: int) -> Decimal:
    """An amount in micro-dollars as an exact ``Decimal`` of dollars."""
    return Decimal(usd_string(microdollars))


def parse_decimal(value: object) -> Optional[Decimal]:
    """A decimal string from the API (``"12.50"``) as ``Decimal``; ``None`` stays ``None``."""
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


@dataclass(frozen=True)
class BudgetConfig:
    """A spending limit.

    Args:
        max_usd: the limit in dollars (``50.0``, ``"50"``, ``Decimal("49.99")``). Converted
            exactly to micro-dollars; sent to Iron as a decimal string.
        period: ``"total"`` (default, never resets), ``"daily"`` or ``"monthly"`` (reset at
            the start of each UTC day or month; enforced by the control service).

    Raises:
        InvalidRequest: negative, non-finite or too large amounts, or an unknown period.
    """

    max_usd: Amount
    period: Period = "total"
    _microdollars: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        micros = to_microdollars(self.max_usd, "BudgetConfig.max_usd")
        if self.period not in PERIODS:
            raise InvalidRequest(
                f"BudgetConfig.period must be one of {', '.join(PERIODS)} (got {self.period!r})"
            )
        object.__setattr__(self, "_microdollars", micros)

    @property
    def microdollars(self) -> int:
        """The limit in micro-dollars."""
        return self._microdollars

    @property
    def usd(self) -> str:
        """The limit as the exact decimal string sent to Iron (``"50"``, ``"0.25"``)."""
        return usd_string(self._microdollars)

    @property
    def amount(self) -> Decimal:
        """The limit as an exact ``Decimal``."""
        return usd(self._microdollars)
