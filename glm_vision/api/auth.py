"""The API key: one parser for `Authorization: Bearer KEY`, one check, shared by /v1 and /mcp."""

from __future__ import annotations

import secrets

from .errors import APIError

AUTH_HEADERS = {"WWW-Authenticate": "Bearer"}


def parse_bearer(header: str) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header value, None when there is none."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_matches(presented: str | None, api_key: str) -> bool:
    return presented is not None and secrets.compare_digest(presented.encode(), api_key.encode())


def check_api_key(authorization: str, api_key: str | None) -> None:
    """Raise a 401 APIError unless the header presents the server's key (no key: anything goes)."""
    if not api_key:
        return
    presented = parse_bearer(authorization)
    if presented is None:
        raise APIError(
            401,
            "this server requires an API key: send the header 'Authorization: Bearer KEY'",
            code="invalid_api_key",
            headers=AUTH_HEADERS,
        )
    if not key_matches(presented, api_key):
        raise APIError(401, "incorrect API key provided", code="invalid_api_key", headers=AUTH_HEADERS)


class BearerGuard:
    """ASGI middleware that requires the API key on every HTTP request to the wrapped app."""

    def __init__(self, app, api_key: str) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            try:
                check_api_key(headers.get(b"authorization", b"").decode("latin-1"), self.api_key)
            except APIError as exc:
                await exc.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)
