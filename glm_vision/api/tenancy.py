"""Who shares cached state: the image features of one API key, the KV of one conversation.

Requests presenting the same key share image features (a repeated image is not re-encoded) and each
conversation keeps its KV (a follow-up turn prefills only its new tokens); requests with different
keys never share anything.
"""

from __future__ import annotations

import hashlib

from ..conversation import Message
from .auth import parse_bearer


def cache_scope(authorization: str) -> str:
    """The tenant's cache scope, derived from its bearer token."""
    token = parse_bearer(authorization)
    if token is None:
        return "api:anonymous"
    return "api:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def conversation_session(scope: str, messages: list[Message]) -> str:
    """The engine session (one live KV cache) of a conversation: named by its opening (everything up
    to the first user message), so each follow-up turn continues the KV of the turns before it and
    a tenant's parallel conversations do not evict each other's KV. Sessions are bounded by the
    engine's --max-sessions and --kv-cache-mb, least recently used first."""
    h = hashlib.sha256()
    for message in messages:
        h.update(f"{message.role}\0{message.text}\0".encode())
        for image in message.images:
            h.update(image.digest.encode())
        if message.role == "user":
            break
    return f"{scope}:{h.hexdigest()[:16]}"
