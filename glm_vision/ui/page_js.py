"""The page's own script (given to Gradio as `head`): the keyboard shortcuts, the chat list's clicks and
the `‹ 2/3 ›` version controls. Each click or key ends in what a user could do by hand (a button of the
page) or in one "action" handed to the server through a hidden button (`ACTION_JS` reads it):
"open:<chat id>", "delete:<chat id>", "version:<n>:<-1|1>" (the n-th version control of the chat).

Keys: Enter sends and Shift+Enter starts a new line (Gradio's MultimodalTextbox does both); Esc stops
the answer being written; Ctrl+Shift+O (Cmd+Shift+O on a Mac) starts a new chat; Shift+Esc or "/"
(outside a text field) puts the cursor in the input box.
"""

from __future__ import annotations

import html

from .text import say

ACTION_JS = "(v) => { const a = window.glmvAction || ''; window.glmvAction = ''; return a; }"

HEAD = """<script>
(() => {
  const VERSIONS = /^\\u2039 (\\d+)\\/(\\d+) \\u203a$/;
  const q = (sel) => document.querySelector(sel);
  const act = (value) => { window.glmvAction = value; q('#glmv-action-go')?.click(); };
  const typing = (el) => el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));

  // The version controls: a chat message reading "‹ 2/3 ›" gets two real buttons.
  const dress = () => {
    document.querySelectorAll('#glmv-chat .message').forEach((message) => {
      const text = message.innerText.trim();
      const match = VERSIONS.exec(text);
      const holder = message.querySelector('.prose, .md') || message;
      if (!match || holder.querySelector('.glmv-versions')) return;
      const [, number, count] = match;
      holder.innerHTML = '<span class="glmv-versions">'
        + '<button class="glmv-prev" aria-label="Previous version"' + (number === '1' ? ' disabled' : '') + '>\\u2039</button>'
        + '<span class="glmv-version-count">' + number + '/' + count + '</span>'
        + '<button class="glmv-next" aria-label="Next version"' + (number === count ? ' disabled' : '') + '>\\u203a</button>'
        + '</span>';
    });
  };
  let queued = false;
  const soon = () => { if (!queued) { queued = true; requestAnimationFrame(() => { queued = false; dress(); }); } };
  new MutationObserver(soon).observe(document.documentElement, {subtree: true, childList: true, characterData: true});

  document.addEventListener('click', (event) => {
    const step = event.target.closest('.glmv-prev, .glmv-next');
    if (step) {
      event.preventDefault(); event.stopPropagation();
      const all = [...document.querySelectorAll('#glmv-chat .glmv-versions')];
      const ordinal = all.indexOf(step.closest('.glmv-versions'));
      act('version:' + ordinal + ':' + (step.classList.contains('glmv-prev') ? -1 : 1));
      return;
    }
    const del = event.target.closest('[data-delete]');
    if (del) { event.stopPropagation(); act('delete:' + del.dataset.delete); return; }
    const item = event.target.closest('[data-chat]');
    if (item) act('open:' + item.dataset.chat);
  }, true);

  document.addEventListener('keydown', (event) => {
    const mod = event.ctrlKey || event.metaKey;
    if (mod && event.shiftKey && event.key.toLowerCase() === 'o') {
      event.preventDefault(); q('#glmv-new')?.click(); return;
    }
    if (event.key === 'Escape' && event.shiftKey) {
      event.preventDefault(); q('#glmv-input textarea')?.focus(); return;
    }
    if (event.key === 'Escape') {
      const stop = q('#glmv-input .stop-button');
      if (stop) { event.preventDefault(); stop.click(); }
      return;
    }
    if (event.key === '/' && !mod && !typing(document.activeElement)) {
      event.preventDefault(); q('#glmv-input textarea')?.focus();
    }
  });
})();
</script>"""

SHORTCUTS = (
    ("Enter", "key_send"),
    ("Shift+Enter", "key_newline"),
    ("Esc", "key_stop"),
    ("Ctrl+Shift+O / ⌘+Shift+O", "key_new_chat"),
    ("Shift+Esc, /", "key_focus"),
)


def keys_help(lang: str) -> str:
    """The "Keyboard" popover: a <details> that lists the shortcuts (no script needed to open it)."""
    rows = "".join(
        f"<tr><td><kbd>{html.escape(keys)}</kbd></td><td>{html.escape(say(lang, what))}</td></tr>"
        for keys, what in SHORTCUTS
    )
    title = html.escape(say(lang, "keyboard"))
    return (
        f'<details class="glmv-keys"><summary title="{title}">⌨ {title}</summary>'
        f'<table class="glmv-keys-table">{rows}</table></details>'
    )
