"""The chat list's search: every word of the query must appear (case-insensitive) in the chat's
title or its text. Words of three or more characters use the full-text index (FTS5 trigrams: any
substring, any script) when the database has one; shorter words, and databases without FTS5, use
LIKE."""

from __future__ import annotations

TRIGRAM = 3


def search_clause(query: str, *, indexed: bool) -> tuple[str, list[str]]:
    """An SQL fragment to AND to a `FROM chats` query, and its parameters."""
    where, params = "", []
    for word in query.split():
        like = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        if indexed and len(word) >= TRIGRAM:
            text = "rowid IN (SELECT rowid FROM chat_text WHERE chat_text MATCH ?)"
            params += [like, '"' + word.replace('"', '""') + '"']
        else:
            text = "texts LIKE ? ESCAPE '\\'"
            params += [like, like]
        where += f" AND (title LIKE ? ESCAPE '\\' OR {text})"
    return where, params
