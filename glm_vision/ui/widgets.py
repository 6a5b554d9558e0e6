"""The components the handlers read and write, by name: `layout.build_ui` creates them, the sessions
return updates keyed by them. (Tests drive the sessions with plain strings in their place.)"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Widgets:
    textbox: object = "textbox"
    chatbot: object = "chatbot"
    status: object = "status"
    error: object = "error"
    notice: object = "notice"  # what is worth saying that is not an error (imported, stopped in the queue)
    cost: object = "cost"
    timer: object = "timer"
    settings: object = "settings"  # the settings accordion
    gallery: object = "gallery"  # the examples
    store: object = "store"  # the chat as JSON, mirrored into the tab's sessionStorage
    export_md: object = "export_md"
    export_json: object = "export_json"
    chats: object = "chats"  # the sidebar's list of the user's chats (HTML)
    title: object = "title"  # the open chat's title (editable)
    undo: object = "undo"  # Undo of a deleted chat, shown for the store's undo window
    undo_timer: object = "undo_timer"
    export_all_file: object = "export_all_file"
    keys: object = "keys"  # the keyboard shortcuts popover
    panel: dict = field(default_factory=dict)  # each of Controls' names -> its component

    @property
    def saved(self) -> list:
        """Where a saved chat goes: the browser's copy, the two export buttons and the chat list."""
        return [self.store, self.export_md, self.export_json, self.chats, self.title]

    @property
    def chat(self) -> list:
        """What a chat handler updates."""
        return [self.textbox, self.chatbot, self.status, self.error, self.notice, *self.saved]
