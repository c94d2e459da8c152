"""Iron SDK for Python: mint and manage IC tokens, run agents behind Iron with a budget, and
embed the Iron proxy in-process.

>>> import iron_sdk
>>> iron_sdk.redact("mail alice@example.com")
'mail [REDACTED:EMAIL]'

- :class:`IronClient` / :class:`AsyncIronClient`: the control service's REST API.
- :func:`protect_agent`: a decorator / context manager giving a call its own budget.
- :class:`LocalProxy`: the real Iron proxy in this process (no control service needed).
- :func:`redact`, :func:`detect`, :func:`estimate_cost`: Iron's PII engine and prices.

The Rust core lives in the private module ``iron_sdk._iron_sdk``.
"""

from __future__ import annotations

from . import _iron_sdk
from .budget import PERIODS, Amount, BudgetConfig, Period
from .client import AsyncIronClient, IronClient
from .errors import (
    AuthError,
    BudgetExceeded,
    Conflict,
    InvalidRequest,
    IronConnectionError,
    IronError,
    NotFound,
    RateLimited,
    ServiceUnavailable,
)
from .helpers import PII_TYPES, detect, estimate_cost, redact
from .local import LocalProxy
from .models import BudgetStatus, IcToken, PiiMatch, Project, Provider, TokenInfo, UsageRecord
from .protect import AgentScope, as_budget_exceeded, current_scope, protect_agent

__version__: str = _iron_sdk.__version__

__all__ = [
    "__version__",
    # control
    "IronClient",
    "AsyncIronClient",
    "BudgetConfig",
    "Period",
    "PERIODS",
    "Amount",
    "IcToken",
    "TokenInfo",
    "Project",
    "BudgetStatus",
    "UsageRecord",
    "Provider",
    # agents
    "protect_agent",
    "AgentScope",
    "current_scope",
    "as_budget_exceeded",
    # embedded proxy
    "LocalProxy",
    # core helpers
    "redact",
    "detect",
    "estimate_cost",
    "PiiMatch",
    "PII_TYPES",
    # errors
    "IronError",
    "AuthError",
    "NotFound",
    "BudgetExceeded",
    "InvalidRequest",
    "Conflict",
    "RateLimited",
    "ServiceUnavailable",
    "IronConnectionError",
]
