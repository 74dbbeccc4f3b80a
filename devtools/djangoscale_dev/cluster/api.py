"""The handful of API calls the launcher makes, over HTTPS with the admin client cert.

The launcher must work where only the standard library and `cryptography` are installed (it
runs before the operator and its Kubernetes client are in play), and it needs five verbs, so
it speaks JSON over `urllib` rather than pulling in a client library.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class ApiClient:
    server: str
    ca: Path
    cert: Path
    key: Path
    timeout: float = 10.0

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        return context

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._context(), timeout=self.timeout) as r:
                raw = r.read().decode()
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, err.read().decode(errors="replace")) from None
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def create(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body)

    def apply(self, path: str, body: dict[str, Any], manager: str = "djangoscale-cluster") -> Any:
        """Server-side apply of `body` at its own object path."""
        return self.request(
            "PATCH",
            f"{path}?fieldManager={manager}&force=true",
            body,
            content_type="application/apply-patch+yaml",
        )

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
