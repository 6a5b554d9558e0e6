"""Opening the history when the server starts. A history that cannot open (a damaged database file,
a data directory that cannot be written) does not stop the server: it runs as with --no-history,
logs one line saying why, and the UI shows the same words in a banner."""

from __future__ import annotations

import logging

from .errors import HistoryError
from .store import ChatStore

log = logging.getLogger(__name__)


def open_history(settings) -> tuple[ChatStore | None, str]:
    """The store (None with --no-history or when it cannot open) and the banner text for the UI ("" when
    there is nothing to say)."""
    if not settings.history:
        return None, ""
    try:
        store = ChatStore.open(
            settings.history_dir, max_chats=settings.history_max_chats, max_bytes=settings.history_max_mb << 20
        )
    except HistoryError as exc:
        log.error("chat history is off: %s", exc)
        return None, f"Chat history is off: {str(exc).rstrip('.')}. Chats stay in this tab only."
    log.info("chat history in %s", settings.history_dir)
    return store, ""
