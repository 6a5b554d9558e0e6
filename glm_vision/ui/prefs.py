"""What the browser keeps: the tab's chat in sessionStorage (survives reloads and server restarts) and
the settings in localStorage (per browser); the JavaScript that reads and writes them."""

from __future__ import annotations

import json

from .controls import NAMES, Controls, checked

CHAT_KEY, PREFS_KEY = "glmv-chat", "glmv-prefs"

LOAD_JS = (
    f"() => [sessionStorage.getItem('{CHAT_KEY}') || '', localStorage.getItem('{PREFS_KEY}') || '', "
    "String(window.innerWidth)]"
)
SAVE_CHAT_JS = f"""(v) => {{
  try {{ if (v) sessionStorage.setItem('{CHAT_KEY}', v); else sessionStorage.removeItem('{CHAT_KEY}'); }}
  catch (e) {{ console.warn('glm-vision: the chat is too large for browser storage', e); }}
}}"""
SAVE_PREFS_JS = (
    "("
    + ", ".join(NAMES)
    + ") => { localStorage.setItem('"
    + PREFS_KEY
    + "', JSON.stringify({"
    + ", ".join(NAMES)
    + "})); }"
)


def saved_controls(raw: str, defaults: Controls, settings) -> Controls:
    """The settings the browser saved, each checked against its range (bad values fall back to the default)."""
    try:
        saved = json.loads(raw) if raw else {}
    except ValueError:
        saved = {}
    return checked(saved if isinstance(saved, dict) else {}, defaults, settings)
