"""http(s) image URLs, fetched only when the server allows it (--allow-remote-images), only from the
allowed hosts, without redirects, within a size and a time limit (no SSRF, no unbounded downloads)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx

from .errors import APIError


def host_allowed(host: str, allowlist: list[str]) -> bool:
    for allowed in allowlist:
        if allowed.startswith("*.") and host.endswith(allowed[1:]):
            return True
        if host == allowed:
            return True
    return False


def allowed_host(url: str, param: str, settings) -> str:
    """The URL's host, or a 400 saying why it may not be fetched."""
    if not settings.allow_remote_images:
        raise APIError(
            400,
            f"{param}: remote image URLs are disabled on this server; send the image inline as a "
            "base64 data: URL (data:image/png;base64,...), or start the server with --allow-remote-images "
            "--remote-image-hosts HOST[,HOST]",
            param=param,
            code="remote_images_disabled",
        )
    host = (urlsplit(url).hostname or "").lower()
    allowlist = [h.strip().lower() for h in settings.remote_image_hosts.split(",") if h.strip()]
    if not host_allowed(host, allowlist):
        listed = ", ".join(allowlist) or "none (set --remote-image-hosts)"
        raise APIError(
            400,
            f"{param}: images from host '{host}' are not allowed; allowed hosts: {listed}",
            param=param,
            code="remote_host_not_allowed",
        )
    return host


def too_large(param: str, message: str) -> APIError:
    return APIError(400, f"{param}: {message}", param=param, code="image_too_large")


async def read_limited(response: httpx.Response, param: str, host: str, limit: int) -> bytes:
    if response.status_code != 200:
        redirect = " (redirects are not followed)" if 300 <= response.status_code < 400 else ""
        raise APIError(
            400,
            f"{param}: fetching the image failed: HTTP {response.status_code} from {host}{redirect}",
            param=param,
            code="remote_image_failed",
        )
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(
            param, f"the remote image is {int(declared) / 1e6:.1f} MB; at most {limit / 1e6:.1f} MB are fetched"
        )
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise too_large(param, f"the remote image is larger than {limit / 1e6:.1f} MB")
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_remote_image(url: str, param: str, settings) -> bytes:
    host = allowed_host(url, param, settings)
    limit = int(settings.remote_image_max_mb * 1e6)
    timeout = settings.remote_image_timeout_s

    async def fetch() -> bytes:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            async with client.stream("GET", url) as response:
                return await read_limited(response, param, host, limit)

    try:
        return await asyncio.wait_for(fetch(), timeout)
    except (TimeoutError, httpx.TimeoutException):
        message = f"{param}: fetching the image from {host} took longer than {timeout:g} s"
        raise APIError(400, message, param=param, code="remote_image_failed") from None
    except httpx.HTTPError as exc:
        message = f"{param}: fetching the image from {host} failed: {type(exc).__name__}"
        raise APIError(400, message, param=param, code="remote_image_failed") from None
