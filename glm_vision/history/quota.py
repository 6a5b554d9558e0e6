"""The caps per user (--history-max-chats, --history-max-mb), with messages that say which limit was
reached and how to get under it."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import QuotaError


@dataclass(frozen=True)
class Quota:
    max_chats: int = 1000
    max_bytes: int = 2 << 30

    def check_chats(self, kept: int, adding: int = 1) -> None:
        """`kept`: how many chats the user keeps now (deleted ones excluded); `adding`: how many more."""
        if kept + adding > self.max_chats:
            raise QuotaError(
                f"You have {kept} saved chats and this server keeps at most {self.max_chats} per user "
                f"(--history-max-chats). Delete chats you no longer need in the chat list to make room."
            )

    def check_bytes(self, used_elsewhere: int, this_chat: int) -> None:
        """`used_elsewhere`: the user's other chats; `this_chat`: the chat as it would be saved."""
        total = used_elsewhere + this_chat
        if total > self.max_bytes:
            raise QuotaError(
                f"This chat was not saved: your chats would take {_mb(total)}, more than the {_mb(self.max_bytes)} "
                f"this server keeps per user (--history-max-mb). Delete chats you no longer need (large "
                f"pictures take the most space), or start a new chat."
            )


def _mb(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MB"
