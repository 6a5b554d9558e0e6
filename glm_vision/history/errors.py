"""What can go wrong with the chat history, in words a user can act on."""

from __future__ import annotations


class HistoryError(Exception):
    """The history cannot be opened (a corrupt database file, a data directory that cannot be written):
    the message names the file or directory and what to do. The server then runs without history."""


class QuotaError(HistoryError):
    """A user reached a cap (--history-max-chats, --history-max-mb): the message names the limit and
    how to free space. Nothing was written."""
