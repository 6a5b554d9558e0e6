"""The web UI's words in English and Chinese.

Static labels go through `gr.I18n` (the browser picks the language); text the server writes at run
time (status lines, errors) is picked from the request's Accept-Language by `lang_of`.
"""

from __future__ import annotations

EN = {
    "title": "GLM-4.6V-Flash vision chat",
    "input_placeholder": "Ask about an image: drop, paste or attach screenshots, photos or PDFs…",
    "chat_label": "Conversation",
    "chat_placeholder": "Drop a screenshot or pick an example, then ask a question.",
    "new_chat": "New chat",
    "settings": "Settings",
    "system_prompt": "System prompt",
    "system_prompt_info": "Instructions the model follows for the whole chat",
    "thinking": "Thinking (reasoning before the answer)",
    "thinking_budget": "Thinking budget (tokens)",
    "thinking_budget_info": "0: no limit; otherwise the reasoning is closed after this many tokens and the answer follows",
    "temperature": "Temperature",
    "top_p": "Top-p",
    "top_k": "Top-k",
    "repetition_penalty": "Repetition penalty",
    "max_new_tokens": "Max new tokens",
    "image_tokens": "Image resolution budget (tokens per image)",
    "image_tokens_info": "Fewer tokens: faster and less memory, less detail",
    "show_boxes": "Show boxes on images",
    "reset_defaults": "Reset to GLM defaults",
    "export_md": "Export Markdown",
    "export_json": "Export JSON",
    "import_json": "Import JSON",
    "examples": "Examples",
    "status": "Status",
    "example_use": "Use this example",
    "chats": "Chats",
    "search": "Search all chats…",
    "chat_title": "Title",
    "chat_title_hint": "This chat's title: named after its first question; type here to rename it",
    "export_all": "Export all",
    "import_all": "Import all",
    "undo_delete": "Undo delete",
}

ZH = {
    "title": "GLM-4.6V-Flash 视觉对话",
    "input_placeholder": "针对图片提问：拖入、粘贴或添加截图、照片或 PDF…",
    "chat_label": "对话",
    "chat_placeholder": "拖入一张截图或选择一个示例，然后提问。",
    "new_chat": "新对话",
    "settings": "设置",
    "system_prompt": "系统提示词",
    "system_prompt_info": "模型在整个对话中遵循的指令",
    "thinking": "思考模式（先推理再回答）",
    "thinking_budget": "思考预算（token 数）",
    "thinking_budget_info": "0 表示不限；否则推理达到该长度后结束，随即给出回答",
    "temperature": "温度",
    "top_p": "Top-p",
    "top_k": "Top-k",
    "repetition_penalty": "重复惩罚",
    "max_new_tokens": "最大生成 token 数",
    "image_tokens": "图片分辨率预算（每张图片的 token 数）",
    "image_tokens_info": "token 越少：越快、越省显存，细节越少",
    "show_boxes": "在图片上显示框和点",
    "reset_defaults": "恢复 GLM 默认值",
    "export_md": "导出 Markdown",
    "export_json": "导出 JSON",
    "import_json": "导入 JSON",
    "examples": "示例",
    "status": "状态",
    "example_use": "使用此示例",
    "chats": "对话列表",
    "search": "搜索所有对话…",
    "chat_title": "标题",
    "chat_title_hint": "本对话的标题：默认取第一个问题，在此输入即可重命名",
    "export_all": "全部导出",
    "import_all": "全部导入",
    "undo_delete": "撤销删除",
}

# Text written by the server at run time: {lang: {key: template}}.
RUNTIME = {
    "en": {
        "loading": "⏳ Loading the model… the chat works as soon as it is ready.",
        "load_failed": "❌ The model failed to load: {error}",
        "model_line": "**Model** {model} · **device** {device}",
        "demo_banner": "⚠️ **Demo model**: a small bundled model for trying the interface; its answers are not "
        "GLM-4.6V-Flash's. On simple pictures like the examples it names, counts, places and boxes shapes and reads "
        "words. Run on a CUDA GPU with `--model zai-org/GLM-4.6V-Flash` for the real model.",
        "last_answer": "**Last answer** first token {ttft} · {tps} tokens/s · {completion} tokens written · "
        "prompt {prompt} tokens: {cached} cached, {computed} computed · "
        "images: {hits} from cache, {encoded} encoded",
        "queued": "⏳ Waiting for the GPU: position {position} in the queue…",
        "generating": "✍️ Writing…",
        "stopped": "⏹ Stopped: the partial answer is kept.",
        "stopped_queued": "⏹ Stopped before the answer began: nothing was written.",
        "question_back": "Your last question had no answer yet: it is back in the input box.",
        "image_tokens_cap": "Fewer tokens: faster and less memory, less detail. "
        "This model takes at most {cap:,} tokens per image.",
        "cost": "Image cost: {detail}",
        "cost_none": "Image cost: up to {budget:,} tokens per image (a 1920×1080 screenshot ≈ {fullhd:,} tokens).",
        "cost_files": "{count} image(s) attached ≈ {tokens:,} tokens",
        "err_empty": "Type a question or attach an image first.",
        "err_too_many": "At most {limit} images per message are accepted; this message has {count}. "
        "Remove some and send again.",
        "err_file": "{name}: {error}",
        "err_not_ready": "The model is still loading; try again in a moment.",
        "err_busy": "Wait for the current answer to finish (or press Stop) before sending the next message.",
        "err_import": "Import failed: {error}",
        "imported": "Imported a chat of {count} messages, with its settings.",
        "nothing_to_export": "There is nothing to export yet.",
        "error_prefix": "⚠️ ",
        "reasoning": "Reasoning",
        "note": "Note: {note}",
        "no_chats": "No saved chats yet.",
        "no_match": "No chat matches the search.",
        "untitled": "Untitled chat",
        "delete_chat": "Delete chat",
        "deleted": "Deleted “{title}”.",
        "err_history": "The chat could not be saved in the history: {error}",
        "err_chat_gone": "That chat is no longer in your history.",
        "imported_all": "Imported {count} chat(s) into your list.",
        "keyboard": "Keyboard",
        "key_send": "send",
        "key_newline": "new line",
        "key_stop": "stop the answer",
        "key_new_chat": "new chat",
        "key_focus": "go to the input box",
    },
    "zh": {
        "loading": "⏳ 正在加载模型……加载完成后即可对话。",
        "load_failed": "❌ 模型加载失败：{error}",
        "model_line": "**模型** {model} · **设备** {device}",
        "demo_banner": "⚠️ **演示模型**：用于体验界面的小型内置模型，回答并非 GLM-4.6V-Flash 的水平。"
        "在示例这类简单图片上，它能说出形状的种类、数量、位置和颜色，框出形状并读出文字。"
        "在 CUDA GPU 上使用 `--model zai-org/GLM-4.6V-Flash` 运行真实模型。",
        "last_answer": "**上一条回答** 首 token {ttft} · {tps} token/秒 · 生成 {completion} 个 token · "
        "提示 {prompt} 个 token：缓存 {cached}，计算 {computed} · 图片：缓存命中 {hits}，编码 {encoded}",
        "queued": "⏳ 正在等待 GPU：队列中第 {position} 位……",
        "generating": "✍️ 正在生成……",
        "stopped": "⏹ 已停止：保留已生成的部分回答。",
        "stopped_queued": "⏹ 已在开始回答前停止：没有生成任何内容。",
        "question_back": "上一个问题还没有得到回答，已放回输入框。",
        "image_tokens_cap": "token 越少：越快、越省显存，细节越少。此模型每张图片最多使用 {cap:,} 个 token。",
        "cost": "图片开销：{detail}",
        "cost_none": "图片开销：每张图片最多 {budget:,} 个 token（一张 1920×1080 截图约 {fullhd:,} 个 token）。",
        "cost_files": "已添加 {count} 张图片，约 {tokens:,} 个 token",
        "err_empty": "请先输入问题或添加图片。",
        "err_too_many": "每条消息最多 {limit} 张图片，本条有 {count} 张。请删除一些后重新发送。",
        "err_file": "{name}：{error}",
        "err_not_ready": "模型仍在加载，请稍后再试。",
        "err_busy": "请等待当前回答完成（或点击停止）后再发送下一条消息。",
        "err_import": "导入失败：{error}",
        "imported": "已导入包含 {count} 条消息的对话及其设置。",
        "nothing_to_export": "还没有可导出的内容。",
        "error_prefix": "⚠️ ",
        "reasoning": "推理过程",
        "note": "提示：{note}",
        "no_chats": "还没有保存的对话。",
        "no_match": "没有匹配搜索的对话。",
        "untitled": "未命名对话",
        "delete_chat": "删除对话",
        "deleted": "已删除“{title}”。",
        "err_history": "对话无法保存到历史记录：{error}",
        "err_chat_gone": "该对话已不在你的历史记录中。",
        "imported_all": "已将 {count} 个对话导入列表。",
        "keyboard": "快捷键",
        "key_send": "发送",
        "key_newline": "换行",
        "key_stop": "停止回答",
        "key_new_chat": "新对话",
        "key_focus": "定位到输入框",
    },
}


def lang_of(request) -> str:
    """'zh' when the browser prefers Chinese, else 'en'."""
    header = ""
    if request is not None:
        try:
            header = request.headers.get("accept-language", "") or ""
        except AttributeError:
            header = ""
    first = header.split(",")[0].strip().lower()
    return "zh" if first.startswith("zh") else "en"


def say(lang: str, key: str, **values) -> str:
    template = RUNTIME.get(lang, RUNTIME["en"]).get(key) or RUNTIME["en"][key]
    return template.format(**values)


def i18n():
    import gradio as gr

    return gr.I18n(en=EN, zh=ZH, **{"zh-CN": ZH, "zh-TW": ZH})
