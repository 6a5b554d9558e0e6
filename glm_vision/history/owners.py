"""Whose chats: with --api-key, the login name; without, a random identity per browser kept in an
HttpOnly, SameSite=Lax cookie (`glmv_owner`), so two browsers on one machine never see each other's
chats and page scripts cannot read the identity.

`OwnerCookieMiddleware` gives every browser request without a valid cookie a new identity: it is set
on the response and also put into the request itself, so the very first page load already has an
owner. `owner_of(request)` is what a Gradio handler asks.
"""

from __future__ import annotations

import re
import secrets
from http.cookies import SimpleCookie

OWNER_COOKIE = "glmv_owner"
TEN_YEARS_S = 10 * 365 * 24 * 3600
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")
_NOT_BROWSER_PATHS = ("/v1", "/health", "/mcp")  # API clients have no use for the identity


def new_owner_token() -> str:
    return secrets.token_urlsafe(32)


def owner_of(request) -> str:
    """The owner of the chats a Gradio event may see: "user:<login name>" with --api-key, else
    "browser:<cookie>"; a client that keeps no cookies gets one per page load ("tab:<session hash>")."""
    username = getattr(request, "username", None)
    if username:
        return f"user:{username}"
    token = _cookie(request)
    if token:
        return f"browser:{token}"
    return f"tab:{getattr(request, 'session_hash', None) or new_owner_token()}"


def _cookie(request) -> str | None:
    try:
        cookies = request.cookies
    except AttributeError:
        return None
    token = cookies.get(OWNER_COOKIE) if cookies is not None else None
    return token if isinstance(token, str) and _TOKEN.fullmatch(token) else None


def _request_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"cookie":
            jar = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed Cookie header: treat as no identity
                continue
            morsel = jar.get(OWNER_COOKIE)
            if morsel is not None and _TOKEN.fullmatch(morsel.value):
                return morsel.value
    return None


def _set_cookie_header(token: str, secure: bool) -> tuple[bytes, bytes]:
    value = f"{OWNER_COOKIE}={token}; Path=/; Max-Age={TEN_YEARS_S}; HttpOnly; SameSite=Lax"
    return b"set-cookie", (value + ("; Secure" if secure else "")).encode("latin-1")


class OwnerCookieMiddleware:
    """ASGI middleware: a browser request without a valid `glmv_owner` cookie gets a new one."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(_NOT_BROWSER_PATHS):
            return await self.app(scope, receive, send)
        headers = list(scope.get("headers", []))
        if _request_token(headers):
            return await self.app(scope, receive, send)
        token = new_owner_token()
        headers = [(k, v) for k, v in headers if k != b"cookie"] + [(b"cookie", _with_owner(headers, token))]
        secure = scope.get("scheme") == "https"

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), _set_cookie_header(token, secure)]}
            await send(message)

        return await self.app({**scope, "headers": headers}, receive, send_with_cookie)


def _with_owner(headers: list[tuple[bytes, bytes]], token: str) -> bytes:
    """The request's cookies with the new identity added (any invalid one it carried dropped)."""
    kept = [v.decode("latin-1") for k, v in headers if k == b"cookie"]
    parts = [p.strip() for line in kept for p in line.split(";") if p.strip()]
    parts = [p for p in parts if not p.startswith(OWNER_COOKIE + "=")]
    return "; ".join([*parts, f"{OWNER_COOKIE}={token}"]).encode("latin-1")
