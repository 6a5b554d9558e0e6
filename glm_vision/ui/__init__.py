"""The Gradio web UI at `/`: one multimodal input, the chat, the settings, status, export/import, examples.

    app = mount_ui(app, state)   # called by server.create_app

Where things are: `layout` builds the page and wires its events to `tabs`, which hands each event to
the tab's `session` (the handlers). `controls` is the chat's settings as one value, `prefs` what the
browser keeps, `render` and `cost` what is shown (`budget` the image-budget handlers), `text` the
words (en/zh), `transcript` a chat (with the versions Retry and Edit keep) and its Markdown, `chat_json`
its JSON, `examples` the example pictures, `tempfiles` the private upload directory. With the chat
history on (`state.history`), `saving` keeps each chat in the user's list through `history` (the
store's document form), `sidebar` and `chat_list` are the list's handlers and HTML, and `page_js` the
page's script (keyboard shortcuts, the list's clicks, the `‹ 2/3 ›` version controls).
Per-tab state lives in the tab's `ChatSession`; the browser keeps a copy of the chat in sessionStorage
(per tab, survives reloads and server restarts) and the settings in localStorage (per browser). The
engine session of a tab is freed when the tab closes (and by the engine's idle timeout).
"""

from .mount import mount_ui

__all__ = ["mount_ui"]
