"""Stubs of the native module ``iron_sdk._iron_sdk`` (Rust, PyO3). Private: use the wrappers of
the public ``iron_sdk`` package. Checked against the built module by ``stubtest``."""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, final

__all__ = [
    "__version__",
    "redact",
    "detect",
    "pii_types",
    "estimate_cost_microdollars",
    "parse_usd_microdollars",
    "parse_ttl_seconds",
    "new_token_id",
    "SigningKey",
    "LocalProxy",
]

__version__: str

def redact(text: str, types: Optional[Sequence[str]] = None, *, reversible: bool = False) -> str:
    """Redacts PII (``types``: only those; ``reversible``: ``[EMAIL_1]`` instead of
    ``[REDACTED:EMAIL]``). Raises ``InvalidRequest`` for an unknown type."""

def detect(text: str, types: Optional[Sequence[str]] = None) -> List[Tuple[str, int, int]]:
    """``(type, start, end)`` of each PII match, as string indices."""

def pii_types() -> List[str]:
    """The PII type names."""

def estimate_cost_microdollars(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> int:
    """Cost in micro-dollars from the embedded price table; ``InvalidRequest``
    (``unknown_model_price``) for a model without a price."""

def parse_usd_microdollars(amount: str) -> int:
    """An exact decimal dollar string in micro-dollars (not negative, ≤ 6 decimals, ≤ 1e9)."""

def parse_ttl_seconds(ttl: str) -> int:
    """A lifetime such as ``"7d"`` in seconds (1 minute to 366 days)."""

def new_token_id() -> str:
    """``tok_<ulid>``."""

@final
class SigningKey:
    """An Ed25519 key that signs IC tokens in this process."""

    def __new__(cls) -> "SigningKey": ...
    @property
    def kid(self) -> str: ...
    def public_key(self) -> Dict[str, str]:
        """``{"kid", "alg", "x"}``."""
    def mint(
        self,
        project: str,
        ttl_seconds: int,
        token_id: Optional[str] = None,
        rpm: Optional[int] = None,
        tpm: Optional[int] = None,
    ) -> Tuple[str, str, int]:
        """``(token_id, token, expires_at)``; ``rpm``/``tpm``: the token's own limits."""

@final
class LocalProxy:
    """The Iron proxy in static mode on a background thread of this process."""

    def __new__(
        cls,
        provider_keys: Mapping[str, str],
        *,
        upstream_base_urls: Optional[Mapping[str, str]] = None,
        project: str = "local",
        budget_usd: Optional[str] = None,
        pii_policy_json: Optional[str] = None,
        pii_enabled: bool = True,
        host: str = "127.0.0.1",
        threads: int = 1,
        shutdown_grace_secs: int = 0,
    ) -> "LocalProxy": ...
    @property
    def url(self) -> str: ...
    @property
    def admin_url(self) -> str: ...
    @property
    def project(self) -> str: ...
    @property
    def limit_microdollars(self) -> Optional[int]: ...
    @property
    def running(self) -> bool: ...
    def mint(self, ttl_seconds: int) -> Tuple[str, str, int]:
        """``(token_id, token, expires_at)`` for a token this proxy accepts."""
    def spent_microdollars(self, wait_secs: float = 0.25) -> int:
        """Settled spend, after waiting up to ``wait_secs`` for requests in flight."""
    def usage_json(self) -> str: ...
    def stop(self) -> None: ...
