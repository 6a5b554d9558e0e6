"""The page: `build_ui` builds the `gr.Blocks` (chat column, settings column, examples) and wires each
event to a handler of `Tabs`. Nothing here decides anything: the handlers live in `session.py`."""

from __future__ import annotations

import gradio as gr

from .controls import default_controls, ranges
from .examples import gallery_files, gallery_items, load_examples
from .page_js import ACTION_JS, keys_help
from .prefs import LOAD_JS, SAVE_CHAT_JS, SAVE_PREFS_JS
from .tabs import Tabs
from .text import i18n
from .widgets import Widgets

LATEX = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
    {"left": "$", "right": "$", "display": False},
]


# A budget typed into the slider's box reaches the server only once inside the slider's range (Gradio
# refuses an out-of-range value with a 500 before the box clamps it).
CLAMP_BUDGET_JS = """(message, budget) => {
  const range = document.querySelector('#glmv-budget input[type=range]');
  return [message, range ? Math.min(Math.max(Number(budget), Number(range.min)), Number(range.max)) : budget];
}"""


def build_ui(state) -> gr.Blocks:
    t = i18n()
    examples = load_examples()
    w = Widgets()
    with gr.Blocks(title="glm-vision", fill_height=True) as demo:
        w.store = gr.Textbox(visible="hidden", elem_id="glmv-store")
        browser_in = [gr.Textbox(visible="hidden", elem_id=f"glmv-{name}-in") for name in ("prefs", "width")]
        side = _sidebar(w, t, state)
        with gr.Row():
            with gr.Column(scale=3):
                new_btn, import_btn = _chat_column(w, t, state)
            with gr.Column(scale=1, min_width=280):
                reset = _settings_panel(w, t, state.settings)
                w.gallery = gr.Gallery(
                    gallery_items(examples, "en"),
                    label=t("examples"),
                    columns=2,
                    object_fit="contain",
                    allow_preview=False,
                    height="auto",
                    elem_id="glmv-examples",
                    visible=bool(examples),
                )
        w.timer = gr.Timer(1.0, active=True)
        tabs = Tabs(state, w, examples, keep=gallery_files(w.gallery))
        _wire_chat(w, tabs, new_btn, import_btn)
        _wire_sidebar(w, tabs, side)
        _wire_page(demo, w, tabs, browser_in)
        reset.click(tabs.reset_controls, None, list(w.panel.values()), queue=False)
        w.gallery.select(tabs.pick_example, None, w.textbox, show_progress="hidden")
    return demo


def _sidebar(w: Widgets, t, state) -> dict:
    """The user's chats (with the history on): New chat, search, the list, Undo of a delete, export and
    import of every chat; the hidden channel of the page script's actions."""
    store = state.history
    with gr.Sidebar(label=t("chats"), open=True, elem_id="glmv-sidebar", visible=store is not None):
        side = {"new": gr.Button(t("new_chat"), elem_id="glmv-side-new", size="sm")}
        side["search"] = gr.Textbox(placeholder=t("search"), show_label=False, elem_id="glmv-search", max_lines=1)
        w.undo = gr.Button(t("undo_delete"), visible=False, elem_id="glmv-undo-delete", size="sm", variant="primary")
        w.chats = gr.HTML(elem_id="glmv-chats", js_on_load=None)
        with gr.Row():
            side["export"] = gr.Button(t("export_all"), elem_id="glmv-export-all", size="sm")
            side["import"] = gr.UploadButton(
                t("import_all"), elem_id="glmv-import-all", file_types=[".json"], size="sm"
            )
        w.export_all_file = gr.DownloadButton(visible=False, elem_id="glmv-export-all-file", size="sm")
    w.undo_timer = gr.Timer(store.undo_seconds if store is not None else 10.0, active=False)
    side["action"] = gr.Textbox(visible="hidden", elem_id="glmv-action-in")
    side["go"] = gr.Button(visible="hidden", elem_id="glmv-action-go")
    return side


def _chat_column(w: Widgets, t, state) -> tuple:
    """Title, status and error lines, the chat, the input, the cost line and the chat's buttons."""
    gr.Markdown("## " + "GLM-4.6V-Flash")
    gr.Markdown(state.history_banner, elem_id="glmv-history-banner", visible=bool(state.history_banner))
    w.title = gr.Textbox(
        label=t("chat_title"),
        placeholder=t("chat_title_hint"),
        elem_id="glmv-title",
        max_lines=1,
        visible=state.history is not None,
        container=False,
    )
    w.status = gr.Markdown(elem_id="glmv-status")
    w.error = gr.Markdown(elem_id="glmv-error")
    w.notice = gr.Markdown(elem_id="glmv-notice")
    w.chatbot = gr.Chatbot(
        label=t("chat_label"),
        elem_id="glmv-chat",
        editable="user",
        latex_delimiters=LATEX,
        buttons=["copy", "copy_all"],
        sanitize_html=True,
        allow_tags=False,
        height="62vh",
        feedback_options=None,
        placeholder=t("chat_placeholder"),
        group_consecutive_messages=False,
    )  # grouped, Edit under a picture and its question fails in the browser
    w.textbox = gr.MultimodalTextbox(
        elem_id="glmv-input",
        file_types=["image", ".pdf"],
        file_count="multiple",
        sources=["upload"],
        placeholder=t("input_placeholder"),
        show_label=False,
        submit_btn=True,
        stop_btn=False,
        autofocus=True,
    )
    w.cost = gr.Markdown(elem_id="glmv-cost")
    with gr.Row():
        new_btn = gr.Button(t("new_chat"), elem_id="glmv-new", size="sm")
        w.export_md = gr.DownloadButton(t("export_md"), elem_id="glmv-export-md", size="sm")
        w.export_json = gr.DownloadButton(t("export_json"), elem_id="glmv-export-json", size="sm")
        import_btn = gr.UploadButton(t("import_json"), elem_id="glmv-import", file_types=[".json"], size="sm")
        w.keys = gr.HTML(keys_help("en"), elem_id="glmv-keys", js_on_load=None)
    return new_btn, import_btn


def _settings_panel(w: Widgets, t, settings) -> gr.Button:
    """The Controls, one component each (w.panel, in the order of controls.NAMES); returns the reset button."""
    defaults, limits = default_controls(settings), ranges(settings)

    def slider(name: str, elem_id: str, **extra) -> gr.Slider:
        r = limits[name]
        return gr.Slider(
            r.low, r.high, value=getattr(defaults, name), step=r.step, label=t(name), elem_id=elem_id, **extra
        )

    with gr.Accordion(t("settings"), open=True) as w.settings:  # closed on a phone (Tabs.restore)
        w.panel = {
            "system_prompt": gr.Textbox(
                label=t("system_prompt"), info=t("system_prompt_info"), lines=2, elem_id="glmv-system"
            ),
            "thinking": gr.Checkbox(label=t("thinking"), value=defaults.thinking, elem_id="glmv-thinking"),
            "thinking_budget": slider("thinking_budget", "glmv-thinking-budget", info=t("thinking_budget_info")),
            "temperature": slider("temperature", "glmv-temperature"),
            "top_p": slider("top_p", "glmv-top-p"),
            "top_k": slider("top_k", "glmv-top-k"),
            "repetition_penalty": slider("repetition_penalty", "glmv-rep"),
            "max_new_tokens": slider("max_new_tokens", "glmv-max-new"),
            "image_tokens": slider("image_tokens", "glmv-budget", info=t("image_tokens_info")),
            "show_boxes": gr.Checkbox(label=t("show_boxes"), value=defaults.show_boxes, elem_id="glmv-show-boxes"),
        }
        return gr.Button(t("reset_defaults"), size="sm", elem_id="glmv-reset")


def _wire_chat(w: Widgets, tabs: Tabs, new_btn, import_btn) -> None:
    """Send, stop, retry, edit, undo, new chat and import: each updates the chat outputs."""
    controls = set(w.panel.values())
    streaming = dict(outputs=w.chat, concurrency_limit=None, show_progress="hidden")
    # "multiple": a question sent right after New chat is taken even while the old answer's event ends
    # (the session itself refuses a second answer at a time)
    w.textbox.submit(tabs.send, {w.textbox, *controls}, trigger_mode="multiple", **streaming)
    w.textbox.stop(tabs.stop, None, None, queue=False)
    w.chatbot.retry(tabs.retry, controls, **streaming)
    w.chatbot.edit(tabs.edit, controls, **streaming)
    w.chatbot.undo(tabs.undo, None, w.chat, show_progress="hidden")
    w.chatbot.clear(tabs.new_chat, None, w.chat, show_progress="hidden")
    new_btn.click(tabs.new_chat, None, w.chat, show_progress="hidden")
    import_btn.upload(tabs.import_chat, import_btn, [*w.chat, *w.panel.values()], show_progress="hidden")
    for export in (w.export_md, w.export_json):
        export.click(tabs.export_clicked, None, w.notice, queue=False, show_progress="hidden")


def _wire_sidebar(w: Widgets, tabs: Tabs, side: dict) -> None:
    """The chat list's events; the chat outputs, the settings (a chat opened brings its own) and Undo."""
    quick = dict(show_progress="hidden")
    opened = [*w.chat, *w.panel.values(), w.undo, w.undo_timer]
    side["go"].click(tabs.chat_action, side["action"], opened, js=ACTION_JS, **quick)
    side["new"].click(tabs.new_chat, None, w.chat, **quick)
    side["search"].change(tabs.search, side["search"], [w.chats, w.title], trigger_mode="always_last", **quick)
    for event in (w.title.submit, w.title.blur):
        event(tabs.rename, w.title, [w.chats, w.title], **quick)
    w.undo.click(tabs.undo_delete, None, opened, **quick)
    w.undo_timer.tick(tabs.undo_expired, None, [w.undo, w.undo_timer, w.notice], **quick)
    side["export"].click(tabs.export_all, None, w.export_all_file, **quick).then(
        None, None, None, js="() => document.querySelector('#glmv-export-all-file')?.click()"
    )
    side["import"].upload(tabs.import_all, side["import"], [w.chats, w.title, w.notice, w.error], **quick)


def _wire_page(demo: gr.Blocks, w: Widgets, tabs: Tabs, browser_in: list) -> None:
    """Page load and close, the browser's copies of the chat and settings, the status timer, the cost line."""
    panel = list(w.panel.values())
    demo.load(
        tabs.restore,
        [w.store, *browser_in],
        [*w.chat, w.cost, w.timer, w.settings, w.gallery, w.keys, *panel],
        js=LOAD_JS,
    )
    demo.unload(tabs.unload)
    w.store.change(None, w.store, None, js=SAVE_CHAT_JS)
    for control in panel:
        control.change(None, panel, None, js=SAVE_PREFS_JS)
    boxes = w.panel["show_boxes"]
    boxes.change(tabs.show_boxes, boxes, w.chatbot, queue=False, show_progress="hidden")
    budget = w.panel["image_tokens"]
    cost_inputs, clamp = [w.textbox, budget], dict(js=CLAMP_BUDGET_JS, queue=False, show_progress="hidden")
    w.timer.tick(tabs.tick, cost_inputs, [w.status, w.timer, w.cost, budget], **clamp)
    for source in cost_inputs:
        source.change(tabs.input_changed, cost_inputs, w.cost, trigger_mode="always_last", **clamp)
