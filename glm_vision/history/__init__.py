"""Chats that last: a per-user chat list stored in SQLite under the data directory (`--data-dir`),
images stored once by content hash beside it. The UI is the only caller; `owner_of` says whose chats a
browser sees.

    store = ChatStore.open(data_dir)           # HistoryError when it cannot
    chat_id = store.create(owner)
    store.save(owner, chat_id, document=..., settings=..., texts=[...], images={sha256: png_bytes})
    store.list(owner, "word")                  # newest first, searched over every message text
"""

from .errors import HistoryError, QuotaError
from .owners import OWNER_COOKIE, OwnerCookieMiddleware, owner_of
from .records import ChatSummary, NewChat, StoredChat
from .startup import open_history
from .store import ChatStore

__all__ = [
    "OWNER_COOKIE",
    "ChatStore",
    "ChatSummary",
    "HistoryError",
    "NewChat",
    "OwnerCookieMiddleware",
    "QuotaError",
    "StoredChat",
    "open_history",
    "owner_of",
]
