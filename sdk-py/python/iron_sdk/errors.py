"""The exceptions of the Iron SDK.

Every error the SDK raises is an :class:`IronError`. The control service answers errors as
``{"error": {"type", "message", "code"}}`` with an ``x-iron-error: <code>`` header; the SDK
maps them by HTTP status (and code) to the subclasses below. Bad input caught before a
request is sent (a TTL that does not parse, a negative budget, an unknown PII type) raises
:class:`InvalidRequest`, which is also a :class:`ValueError`.

The native module (``iron_sdk._iron_sdk``) raises these same classes.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

__all__ = [
    "IronError",
    "AuthError",
    "NotFound",
    "BudgetExceeded",
    "InvalidRequest",
    "Conflict",
    "RateLimited",
    "ServiceUnavailable",
    "IronConnectionError",
    "error_from_response",
]


class IronError(Exception):
    """Base class of every Iron SDK error.

    Attributes:
        message: what went wrong, safe to show (never contains a secret).
        code: Iron's machine-readable code (``not_found``, ``budget_exceeded``, …), if any.
        status_code: the HTTP status of the answer, if the error came from a server.
        type: the ``error.type`` of the answer (``not_found_error``, …), if any.
        body: the decoded error body, if any.
    """

    def __init__(
        self,
        message: str,
        code: Optional[str] = None,
        *,
        status_code: Optional[int] = None,
        type: Optional[str] = None,  # noqa: A002 - mirrors the wire field
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code
        self.type = type
        self.body = body

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        parts = [repr(self.message)]
        if self.code is not None:
            parts.append(f"code={self.code!r}")
        if self.status_code is not None:
            parts.append(f"status_code={self.status_code}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.message, self.code, self.__dict__))


def _rebuild(cls: type, message: str, code: Optional[str], state: Dict[str, Any]) -> IronError:
    err: IronError = cls(message, code)
    err.__dict__.update(state)
    return err


class AuthError(IronError):
    """The API key or IC token is missing, invalid or revoked (401), or lacks the permission (403)."""


class NotFound(IronError):
    """The project, token or provider does not exist (404)."""


class BudgetExceeded(IronError):
    """Iron refused a call because the budget is spent (402 ``budget_exceeded``), or cut a
    stream off for that reason."""


class InvalidRequest(IronError, ValueError):
    """The input was refused: by the SDK before sending, or by Iron (400, 413)."""


class Conflict(IronError):
    """The object already exists (409), e.g. a project name that is taken."""


class RateLimited(IronError):
    """Too many requests (429)."""


class ServiceUnavailable(IronError):
    """The service (or its store, or the upstream provider) is unavailable (502, 503, 504)."""


class IronConnectionError(IronError):
    """The control service could not be reached (connection refused, DNS, timeout)."""


def error_from_response(
    status: int, body: Any, headers: Optional[Mapping[str, str]] = None
) -> IronError:
    """The exception for an error answer of an Iron service.

    ``body`` is the decoded JSON body (or text); ``headers`` the response headers (for
    ``x-iron-error``). Both the control API shape ``{"error": {...}}`` and the Anthropic shape
    ``{"type": "error", "error": {...}}`` are understood.
    """
    err = body.get("error") if isinstance(body, dict) else None
    message: Optional[str] = None
    code: Optional[str] = None
    etype: Optional[str] = None
    if isinstance(err, dict):
        message = err.get("message") if isinstance(err.get("message"), str) else None
        code = err.get("code") if isinstance(err.get("code"), str) else None
        etype = err.get("type") if isinstance(err.get("type"), str) else None
    if headers is not None:
        header_code = _header(headers, "x-iron-error")
        if header_code:
            code = code or header_code
    if message is None:
        text = body if isinstance(body, str) and body.strip() else None
        message = f"HTTP {status}" + (f": {text.strip()[:200]}" if text else "")
    cls: type[IronError]
    if status == 402 or code == "budget_exceeded":
        cls = BudgetExceeded
    elif status in (401, 403):
        cls = AuthError
    elif status == 404:
        cls = NotFound
    elif status == 409:
        cls = Conflict
    elif status == 429:
        cls = RateLimited
    elif status in (400, 405, 413, 415, 422):
        cls = InvalidRequest
    elif status in (502, 503, 504):
        cls = ServiceUnavailable
    else:
        cls = IronError
    return cls(message, code, status_code=status, type=etype, body=body)


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    value = getter(name)
    if value is None:
        for k, v in headers.items():
            if k.lower() == name:
                return str(v)
        return None
    return str(value)
