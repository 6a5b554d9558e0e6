"""How large a request body may be, checked before it is read and while it arrives."""

from __future__ import annotations

from .errors import APIError

MIN_BODY_LIMIT = 8_000_000


def body_limit(settings) -> int:
    """Room for the most images one message may carry, base64-encoded, plus text."""
    per_image = settings.max_upload_bytes * 4 / 3
    return int(max(MIN_BODY_LIMIT, per_image * settings.max_images_per_message + 1_000_000))


def check_declared_length(content_length: str | None, limit: int) -> None:
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise APIError(
            413,
            f"the request body is {int(content_length) / 1e6:.1f} MB; at most {limit / 1e6:.1f} MB are accepted",
            code="request_too_large",
        )


def limited_receive(receive, limit: int):
    """An ASGI receive that fails with a 413 once more than `limit` body bytes arrived."""
    received = 0

    async def limited():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise APIError(413, f"the request body is larger than {limit / 1e6:.1f} MB", code="request_too_large")
        return message

    return limited
