"""`mount_ui(app, state)`: the web UI at `/` of the FastAPI app, with the login (when --api-key is set),
the folders Gradio may serve, the upload limit and the page's CSS."""

from __future__ import annotations

import hmac

import gradio as gr

from .examples import EXAMPLES_DIR
from .layout import build_ui
from .overlay import page_css, page_head
from .page_js import HEAD
from .render import IMAGE_DIR
from .text import i18n

CSS = """
#glmv-error p { color: #dc2626; font-weight: 600; }
.dark #glmv-error p { color: #f87171; }
#glmv-chat button[aria-label="Share"] { display: none; }
@media (max-width: 640px) {
  #glmv-chat { height: 48vh !important; }
  #glmv-status { font-size: 0.8em; }
}
#glmv-notice p { font-weight: 600; }
#glmv-status { font-size: 0.9em; }
#glmv-cost { font-size: 0.85em; opacity: 0.8; }
#glmv-examples .caption-label { position: static; white-space: normal; overflow: visible; text-overflow: clip;
  max-width: none; width: 100%; text-align: center; }
#glmv-examples .thumbnail-item { height: auto; aspect-ratio: auto; }
.glmv-chat-list { display: flex; flex-direction: column; gap: 2px; }
.glmv-chat-item { display: flex; align-items: center; gap: 8px; padding: 6px; border-radius: 8px; cursor: pointer; }
.glmv-chat-item:hover, .glmv-chat-item.glmv-open { background: var(--background-fill-secondary); }
.glmv-thumb { width: 44px; height: 44px; object-fit: cover; border-radius: 6px; flex: none; display: flex;
  align-items: center; justify-content: center; }
.glmv-chat-text { display: flex; flex-direction: column; min-width: 0; flex: 1; }
.glmv-chat-title { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; font-weight: 600; }
.glmv-chat-date { font-size: 0.8em; opacity: 0.7; }
.glmv-chat-delete { flex: none; opacity: 0.5; padding: 2px 6px; }
.glmv-chat-delete:hover { opacity: 1; color: #dc2626; }
.glmv-versions { display: inline-flex; align-items: center; gap: 6px; font-size: 0.85em; }
.glmv-versions button { padding: 0 8px; border-radius: 6px; border: 1px solid var(--border-color-primary); }
.glmv-versions button:disabled { opacity: 0.35; }
/* the version control is not a message: no copy button under it */
.message-row:has(.glmv-versions) + .message-buttons { display: none; }
.glmv-keys { position: relative; }
.glmv-keys summary { cursor: pointer; font-size: 0.85em; list-style: none; padding: 4px 8px; }
.glmv-keys-table { position: absolute; bottom: 100%; right: 0; z-index: 20; font-size: 0.85em; white-space: nowrap;
  background: var(--background-fill-primary); border: 1px solid var(--border-color-primary); border-radius: 8px; }
"""


def browser_limit(max_bytes: int) -> int:
    """The upload limit as the browser checks it. Gradio's message counts 1,024 KiB to the MB, so the
    limit is given in those units ("20.0 Mb" for 20 MB, not "19.1 Mb"); a file between the two sizes
    passes the browser and is refused by the server's own check, with the same number."""
    return round(max_bytes / 1e6 * 1024 * 1024)


def mount_ui(app, state):
    """Mount the web UI at `/` of the FastAPI app; with --api-key the UI asks for a login (any user
    name, the API key as password)."""
    settings = state.settings
    key = settings.api_key
    auth = None
    if key:

        def auth(_username: str, password: str) -> bool:
            return hmac.compare_digest(password.encode(), key.encode())

    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    return gr.mount_gradio_app(
        app,
        build_ui(state),
        path="/",
        auth=auth,
        auth_message="Enter any user name and the server's API key (--api-key) as the password." if key else None,
        allowed_paths=[str(IMAGE_DIR), str(EXAMPLES_DIR)],
        max_file_size=browser_limit(settings.max_upload_bytes),
        i18n=i18n(),
        css=CSS + page_css(),
        head=HEAD + page_head(),
        footer_links=["api"],
        show_error=True,
    )
