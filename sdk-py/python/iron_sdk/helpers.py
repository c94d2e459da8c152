"""Helpers from Iron's Rust core, run in-process: PII redaction and detection (the proxy's own
engine) and cost estimates (the proxy's embedded price table). The work runs without the GIL."""

from __future__ import annotations

from decimal import Decimal
from typing import Iterable, List, Optional

from . import _iron_sdk
from .budget import usd
from .errors import InvalidRequest
from .models import PiiMatch

__all__ = ["redact", "detect", "estimate_cost", "PII_TYPES"]

PII_TYPES: "tuple[str, ...]" = tuple(_iron_sdk.pii_types())
"""The PII types Iron detects: EMAIL, PHONE, CREDIT_CARD, US_SSN, IBAN, IP_ADDRESS, SECRET."""


def _types(types: Optional[Iterable[str]]) -> Optional[List[str]]:
    if types is None:
        return None
    if isinstance(types, str):
        return [types]
    return list(types)


def redact(text: str, types: Optional[Iterable[str]] = None, *, reversible: bool = False) -> str:
    """Redacts PII in ``text`` exactly as the Iron proxy does before a prompt leaves.

    Args:
        text: any text.
        types: only these types (names from :data:`PII_TYPES`, any case); default all.
        reversible: ``False`` (default) writes ``[REDACTED:EMAIL]``; ``True`` writes the
            numbered placeholders the proxy sends upstream (``[EMAIL_1]``).

    Raises:
        InvalidRequest: an unknown type name.

    >>> redact("write to alice@example.com")
    'write to [REDACTED:EMAIL]'
    """
    return _iron_sdk.redact(text, _types(types), reversible=reversible)


def detect(text: str, types: Optional[Iterable[str]] = None) -> List[PiiMatch]:
    """The PII in ``text``, left to right, with string offsets.

    >>> [(m.type, m.text) for m in detect("card 4111 1111 1111 1111, ip 10.0.0.1")]
    [('CREDIT_CARD', '4111 1111 1111 1111'), ('IP_ADDRESS', '10.0.0.1')]
    """
    return [PiiMatch(t, s, e, text[s:e]) for (t, s, e) in _iron_sdk.detect(text, _types(types))]


def estimate_cost(
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> Decimal:
    """The cost in USD (exact ``Decimal``, rounded up to the micro-dollar) of a request, with the
    prices the proxy charges by default. ``input_tokens`` is the whole prompt, including
    cached and cache-write tokens.

    Raises:
        InvalidRequest: unknown model (code ``unknown_model_price``: Iron never prices an unknown
            model at zero), negative counts, or cached tokens above the prompt.

    >>> estimate_cost("gpt-4o-mini", 1_000_000, 0)
    Decimal('0.15')
    """
    for name, n in (
        ("input_tokens", input_tokens),
        ("output_tokens", output_tokens),
        ("cached_input_tokens", cached_input_tokens),
        ("cache_write_tokens", cache_write_tokens),
    ):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidRequest(f"{name} must be a non-negative integer, got {n!r}")
    micros = _iron_sdk.estimate_cost_microdollars(
        model, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens
    )
    return usd(micros)
