"""The Gradio web UI at `/`: one multimodal input, the chat, controls, status, export/import, examples.

    app = mount_ui(app, state)   # called by server.create_app

Per-tab state lives in `gr.State` (the transcript, the last usage); the browser keeps a copy of the
chat in sessionStorage (per tab, survives reloads and server restarts) and the settings in
localStorage (per browser). The engine session of a tab is freed when the tab closes (and by the
engine's idle timeout).
"""

from __future__ import annotations

import hmac
import json
import uuid
from pathlib import Path

import gradio as gr

from .backend import (DEFAULT_REPETITION_PENALTY, DEFAULT_TEMPERATURE, DEFAULT_TOP_K, DEFAULT_TOP_P)
from .images import ImageError
from .tempfiles import keyed_name, private_dir
from .transcript import Transcript, export_name, from_json, to_json, to_markdown
from .ui_chat import ChatHandlers, Controls, Widgets
from .ui_render import IMAGE_DIR, chat_messages, cost_line, status_markdown
from .ui_text import i18n as make_i18n
from .ui_text import lang_of, say

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
EXPORT_DIR = private_dir("exports")  # per session: EXPORT_DIR/<keyed session>/<random>/
CHAT_KEY, PREFS_KEY = "glmv-chat", "glmv-prefs"
LATEX = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
    {"left": "$", "right": "$", "display": False},
]
CSS = """
#glmv-error p { color: var(--error-text-color, #dc2626); font-weight: 600; }
#glmv-status { font-size: 0.9em; }
#glmv-cost { font-size: 0.85em; opacity: 0.8; }
"""
LOAD_JS = f"() => [sessionStorage.getItem('{CHAT_KEY}') || '', localStorage.getItem('{PREFS_KEY}') || '']"
SAVE_CHAT_JS = f"""(v) => {{
  try {{ if (v) sessionStorage.setItem('{CHAT_KEY}', v); else sessionStorage.removeItem('{CHAT_KEY}'); }}
  catch (e) {{ console.warn('glm-vision: the chat is too large for browser storage', e); }}
}}"""
PREF_NAMES = ["system_prompt", "thinking", "temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "image_tokens"]
SAVE_PREFS_JS = "(" + ", ".join(PREF_NAMES) + ") => { localStorage.setItem('" + PREFS_KEY + "', JSON.stringify({" + \
    ", ".join(PREF_NAMES) + "})); }"


def model_cap(state) -> int | None:
    """The loaded backend's most tokens per image, None while loading or when it does not say."""
    return getattr(state.backend.info, "max_image_tokens", None) if state.backend is not None else None


def load_examples() -> list[dict]:
    index = EXAMPLES_DIR / "examples.json"
    if not index.exists():
        return []
    items = json.loads(index.read_text(encoding="utf-8"))
    return [dict(item, image=str(EXAMPLES_DIR / item["image"])) for item in items if (EXAMPLES_DIR / item["image"]).exists()]


def default_controls(settings) -> Controls:
    return Controls(thinking=settings.thinking, temperature=DEFAULT_TEMPERATURE, top_p=DEFAULT_TOP_P, top_k=DEFAULT_TOP_K,
                    repetition_penalty=DEFAULT_REPETITION_PENALTY, max_new_tokens=settings.max_new_tokens,
                    image_tokens=settings.max_image_tokens)


def _clean_prefs(raw: str, defaults: Controls, settings) -> Controls:
    """Saved settings from the browser, each checked against its range (bad values fall back to the default)."""
    try:
        saved = json.loads(raw) if raw else {}
    except ValueError:
        saved = {}
    if not isinstance(saved, dict):
        saved = {}
    limits = {"temperature": (0.0, 2.0), "top_p": (0.01, 1.0), "top_k": (0, 100), "repetition_penalty": (1.0, 2.0),
              "max_new_tokens": (1, max(settings.max_new_tokens, 8192)), "image_tokens": (4, settings.max_image_tokens)}
    values = {}
    for name in PREF_NAMES:
        default, value = getattr(defaults, name), saved.get(name)
        if name == "system_prompt":
            values[name] = value if isinstance(value, str) else default
        elif name == "thinking":
            values[name] = value if isinstance(value, bool) else default
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and limits[name][0] <= value <= limits[name][1]:
            values[name] = type(default)(value)
        else:
            values[name] = default
    return Controls(**values)


def _image_sizes(message: dict | None, settings) -> list[tuple[int, int]]:
    """Sizes of the attached files from their headers only (PDF pages at the render resolution)."""
    from PIL import Image

    sizes = []
    for entry in (message or {}).get("files") or []:
        path = entry if isinstance(entry, str) else entry.get("path")
        try:
            if Path(path).read_bytes()[:5] == b"%PDF-":
                import pypdfium2 as pdfium

                document = pdfium.PdfDocument(path)
                scale = settings.pdf_dpi / 72
                for index in range(min(len(document), settings.pdf_max_pages)):
                    width, height = document.get_page_size(index)
                    sizes.append((int(width * scale), int(height * scale)))
                document.close()
            else:
                with Image.open(path) as image:
                    sizes.append(image.size)
        except Exception:  # noqa: BLE001 - a bad file is reported when it is sent, not here
            continue
    return sizes


def build_ui(state) -> gr.Blocks:
    settings = state.settings
    t = make_i18n()
    defaults = default_controls(settings)
    examples = load_examples()
    w = Widgets()

    with gr.Blocks(title="glm-vision", fill_height=True) as demo:
        w.transcript = gr.State(Transcript())
        w.usage = gr.State({})
        store = gr.Textbox(visible="hidden", elem_id="glmv-store")
        prefs_in = gr.Textbox(visible="hidden", elem_id="glmv-prefs-in")
        with gr.Row():
            with gr.Column(scale=3):
                gr.Markdown("## " + "GLM-4.6V-Flash")
                w.status = gr.Markdown(elem_id="glmv-status")
                w.error = gr.Markdown(elem_id="glmv-error")
                w.chatbot = gr.Chatbot(
                    label=t("chat_label"), elem_id="glmv-chat", editable="user", latex_delimiters=LATEX,
                    buttons=["copy", "copy_all"], sanitize_html=True, allow_tags=False, height="62vh",
                    feedback_options=None, placeholder=None, group_consecutive_messages=True)
                w.textbox = gr.MultimodalTextbox(
                    elem_id="glmv-input", file_types=["image", ".pdf"], file_count="multiple", sources=["upload"],
                    placeholder=t("input_placeholder"), show_label=False, submit_btn=True, stop_btn=False, autofocus=True)
                cost = gr.Markdown(elem_id="glmv-cost")
                with gr.Row():
                    new_btn = gr.Button(t("new_chat"), elem_id="glmv-new", size="sm")
                    export_md = gr.DownloadButton(t("export_md"), elem_id="glmv-export-md", size="sm")
                    export_json = gr.DownloadButton(t("export_json"), elem_id="glmv-export-json", size="sm")
                    import_btn = gr.UploadButton(t("import_json"), elem_id="glmv-import", file_types=[".json"], size="sm")
            with gr.Column(scale=1, min_width=280):
                with gr.Accordion(t("settings"), open=True):
                    system = gr.Textbox(label=t("system_prompt"), info=t("system_prompt_info"), lines=2, elem_id="glmv-system")
                    thinking = gr.Checkbox(label=t("thinking"), value=defaults.thinking, elem_id="glmv-thinking")
                    temperature = gr.Slider(0, 2, value=defaults.temperature, step=0.05, label=t("temperature"), elem_id="glmv-temperature")
                    top_p = gr.Slider(0.01, 1, value=defaults.top_p, step=0.01, label=t("top_p"), elem_id="glmv-top-p")
                    top_k = gr.Slider(0, 100, value=defaults.top_k, step=1, label=t("top_k"), elem_id="glmv-top-k")
                    rep = gr.Slider(1, 2, value=defaults.repetition_penalty, step=0.01, label=t("repetition_penalty"), elem_id="glmv-rep")
                    max_new = gr.Slider(1, max(settings.max_new_tokens, 8192), value=defaults.max_new_tokens, step=1,
                                        label=t("max_new_tokens"), elem_id="glmv-max-new")
                    budget = gr.Slider(min(64, settings.max_image_tokens), settings.max_image_tokens, value=defaults.image_tokens,
                                       step=1, label=t("image_tokens"), info=t("image_tokens_info"), elem_id="glmv-budget")
                    reset = gr.Button(t("reset_defaults"), size="sm", elem_id="glmv-reset")
                gallery = gr.Gallery([(e["image"], e["question"]) for e in examples], label=t("examples"), columns=3,
                                     allow_preview=False, height="auto", elem_id="glmv-examples", visible=bool(examples))
        timer = gr.Timer(1.0, active=True)

        controls = [system, thinking, temperature, top_p, top_k, rep, max_new, budget]
        saved_outputs = [store, export_md, export_json]

        def save(transcript: Transcript, usage: dict, lang: str, session: str = "") -> dict:
            if not transcript.turns:
                return {store: "", export_md: gr.DownloadButton(value=None), export_json: gr.DownloadButton(value=None)}
            model = state.backend.info.model if state.backend is not None else ""
            body = to_json(transcript)
            owner = EXPORT_DIR / keyed_name("session:" + session, 16)
            folder = owner / uuid.uuid4().hex[:16]
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            h.files.add(session, owner)
            md_path, json_path = folder / export_name(transcript, "md"), folder / export_name(transcript, "json")
            md_path.write_text(to_markdown(transcript, model=model), encoding="utf-8")
            json_path.write_text(body, encoding="utf-8")
            return {store: body, export_md: gr.DownloadButton(value=str(md_path)),
                    export_json: gr.DownloadButton(value=str(json_path))}

        h = ChatHandlers(state, w, save)
        w.saved = saved_outputs
        chat_outputs = [w.textbox, w.chatbot, w.transcript, w.usage, w.status, w.error, *saved_outputs]
        common = dict(outputs=chat_outputs, concurrency_limit=None, show_progress="hidden")

        w.textbox.submit(h.send, [w.textbox, w.transcript, w.usage, *controls], **common)
        w.textbox.stop(h.stop, None, None, queue=False)
        w.chatbot.retry(h.retry, [w.transcript, w.usage, *controls], **common)
        w.chatbot.edit(h.edit, [w.transcript, w.usage, *controls], **common)
        w.chatbot.undo(h.undo, [w.transcript, w.usage], chat_outputs, show_progress="hidden")
        w.chatbot.clear(h.new_chat, None, chat_outputs, show_progress="hidden")
        new_btn.click(h.new_chat, None, chat_outputs, show_progress="hidden")
        store.change(None, store, None, js=SAVE_CHAT_JS)
        for control in controls:
            control.change(None, controls, None, js=SAVE_PREFS_JS)
        demo.unload(h.unload)

        def restore(saved_chat: str, saved_prefs: str, request: gr.Request):
            lang = lang_of(request)
            prefs = _clean_prefs(saved_prefs, defaults, settings)
            transcript, error = Transcript(), ""
            if saved_chat:
                try:
                    transcript, _ = from_json(saved_chat, max_bytes=settings.max_upload_bytes)
                except ImageError as exc:
                    error = say(lang, "error_prefix") + say(lang, "err_import", error=exc)
            usage = next((turn.usage for turn in reversed(transcript.turns) if turn.usage), {})
            out = {w.chatbot: chat_messages(transcript, lang)[0], w.transcript: transcript, w.usage: usage,
                   w.status: status_markdown(state, lang, usage), w.error: error,
                   cost: cost_line(lang, prefs.image_tokens, [], model_cap(state)), timer: gr.Timer(active=state.backend is None)}
            out.update({c: getattr(prefs, name) for c, name in zip(controls, PREF_NAMES)})
            if transcript.turns:
                out.update(save(transcript, usage, lang, request.session_hash))
            return out

        demo.load(restore, [store, prefs_in], [*chat_outputs, cost, timer, *controls], js=LOAD_JS)


        def import_chat(file, usage: dict, request: gr.Request):
            lang = lang_of(request)
            path = file if isinstance(file, str) else getattr(file, "name", None)
            try:
                data = Path(path).read_bytes()
                transcript, _ = from_json(data, max_bytes=settings.max_upload_bytes,
                                          max_images_per_message=settings.max_images_per_message)
            except (ImageError, OSError) as exc:
                return {w.error: say(lang, "error_prefix") + say(lang, "err_import", error=exc)}
            h.close(request)  # the engine's cached prefix belongs to the old chat
            usage = next((turn.usage for turn in reversed(transcript.turns) if turn.usage), {})
            return {w.chatbot: chat_messages(transcript, lang)[0], w.transcript: transcript, w.usage: usage,
                    w.error: say(lang, "imported", count=len(transcript.turns)),
                    w.status: status_markdown(state, lang, usage)} | save(transcript, usage, lang, request.session_hash)

        import_btn.upload(import_chat, [import_btn, w.usage], chat_outputs, show_progress="hidden")

        def show_cost(message, image_tokens, request: gr.Request):
            return cost_line(lang_of(request), int(image_tokens), _image_sizes(message, settings), model_cap(state))

        def tick(usage: dict, message, image_tokens, request: gr.Request):
            """While the model loads: the status, and the image cost once the model's own cap is known."""
            return (status_markdown(state, lang_of(request), usage),
                    gr.Timer(active=state.backend is None and not state.load_error), show_cost(message, image_tokens, request))

        timer.tick(tick, [w.usage, w.textbox, budget], [w.status, timer, cost], show_progress="hidden", queue=False)
        w.textbox.change(show_cost, [w.textbox, budget], cost, queue=False, show_progress="hidden", trigger_mode="always_last")
        budget.change(show_cost, [w.textbox, budget], cost, queue=False, show_progress="hidden", trigger_mode="always_last")

        def reset_controls():
            return [getattr(defaults, name) for name in PREF_NAMES]

        reset.click(reset_controls, None, controls, queue=False)

        def pick_example(evt: gr.SelectData, request: gr.Request):
            item = examples[evt.index]
            question = item.get("question_zh") if lang_of(request) == "zh" and item.get("question_zh") else item["question"]
            return {"text": question, "files": [item["image"]]}

        gallery.select(pick_example, None, w.textbox, show_progress="hidden")
    return demo


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
        app, build_ui(state), path="/", auth=auth,
        auth_message="Enter any user name and the server's API key (--api-key) as the password." if key else None,
        allowed_paths=[str(IMAGE_DIR), str(EXAMPLES_DIR)], max_file_size=settings.max_upload_bytes,
        i18n=make_i18n(), css=CSS, footer_links=["api"], show_error=True,
    )
