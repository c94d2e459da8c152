"""The HTTP transport of :class:`~iron_sdk.IronClient`: ``urllib`` from the standard library
(no third-party dependency), JSON in and out, errors mapped to :mod:`iron_sdk.errors`."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Mapping, Optional

from .errors import IronConnectionError, IronError, error_from_response

USER_AGENT = "iron-sdk-python"


class Transport:
    def __init__(self, base_url: str, api_key: str, timeout: float, version: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.user_agent = f"{USER_AGENT}/{version}"
        # No proxy from the environment: control is addressed directly.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Mapping[str, Any]] = None,
        body: Any = None,
    ) -> Any:
        url = self.base_url + path
        if params:
            query = {k: v for k, v in params.items() if v is not None}
            if query:
                url += "?" + urllib.parse.urlencode(query)
        data = None
        headers: Dict[str, str] = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "application/json",
            "User-Agent": self.user_agent,
        }
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            payload = e.read()
            raise error_from_response(e.code, _decode(payload), dict(e.headers.items())) from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise IronConnectionError(
                f"cannot reach the Iron control service at {self.base_url}: {reason}",
                "connection_error",
            ) from None
        if not raw:
            return None
        decoded = _decode(raw)
        if isinstance(decoded, str):
            raise IronError(f"unexpected non-JSON answer from {url}", "invalid_response", body=decoded)
        return decoded


def _decode(payload: bytes) -> Any:
    text = payload.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
