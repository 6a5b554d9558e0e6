"""`--mcp`: the chat as an MCP tool ("ask a question about an image") through Gradio's MCP server,
so agents use the same running model (and caches) as the web UI and the API.

The tool lives in its own small Gradio app mounted at /mcp, apart from the web UI, so only this
one function is exposed. MCP clients connect with the streamable HTTP transport at
`http://HOST:PORT/mcp/gradio_api/mcp/` (SSE at `.../mcp/gradio_api/mcp/sse`). With --api-key the
endpoint needs `Authorization: Bearer KEY`, as the API does.
"""

from __future__ import annotations

import logging

import gradio as gr

from ..backend import EngineError, GenerationRequest, GenerationResult, SamplingParams
from ..conversation import Message, split_output
from .errors import APIError
from .messages import load_image_part

log = logging.getLogger(__name__)

MOUNT_PATH = "/mcp"
TOOL_NAME = "ask_about_image"


def tool_for(state):
    """The MCP tool; Gradio reads its name, signature and docstring for the tool's schema."""

    async def ask_about_image(image: str, question: str, thinking: bool = False) -> str:
        """Ask the GLM-4.6V-Flash vision model a question about one image (a screenshot, photo, chart, diagram or document page) and get its answer.

        Args:
            image: the image as a data URL ("data:image/png;base64,...") or plain base64 of a PNG, JPEG, WebP or GIF file; a PDF's pages are read as images. http(s) URLs work only where the server allows remote images.
            question: what to ask about the image, e.g. "What error does this dialog show?"
            thinking: let the model reason step by step before answering (slower; often better on charts, math and small text)

        Returns:
            The model's answer, without its reasoning.
        """
        return await answer(state, image, question, bool(thinking))

    return ask_about_image


async def answer(state, image: str, question: str, thinking: bool) -> str:
    backend = state.backend
    if backend is None:
        raise gr.Error("the model is still loading; try again in a few seconds")
    if not question or not question.strip():
        raise gr.Error("ask a question about the image")
    request = GenerationRequest(
        [Message("user", question.strip(), await images_of(image, state.settings))],
        SamplingParams(max_new_tokens=state.settings.max_new_tokens),
        session_id="mcp",  # agents' calls share one session: a repeated image is not encoded again
        cache_scope="mcp",
        enable_thinking=thinking,
    )
    try:
        return split_output((await result_of(backend.submit(request))).text).answer
    except EngineError as exc:
        raise gr.Error(exc.message) from None


async def images_of(image: str, settings) -> list:
    source = (image or "").strip()
    if not source:
        raise gr.Error("send the image as a data URL or base64")
    if not source.startswith(("data:", "http://", "https://")):
        source = "data:application/octet-stream;base64," + source
    try:
        return await load_image_part(source, "image", settings)
    except APIError as exc:
        raise gr.Error(exc.message.removeprefix("image: ")) from None


async def result_of(handle) -> GenerationResult:
    try:
        async for item in handle:
            if isinstance(item, GenerationResult):
                return item
    finally:
        handle.cancel()  # the MCP call was abandoned: stop the GPU work
    raise EngineError("the request ended without an answer")


def build_mcp_blocks(state) -> gr.Blocks:
    with gr.Blocks(title="glm-vision MCP tool", analytics_enabled=False) as blocks:
        gr.Markdown("The `ask_about_image` MCP tool of glm-vision. Connect an MCP client to `/mcp/gradio_api/mcp/`.")
        image = gr.Textbox(label="image (data URL or base64)")
        question = gr.Textbox(label="question")
        thinking = gr.Checkbox(label="thinking", value=False)
        answer_box = gr.Textbox(label="answer")
        # queue=False: Gradio's MCP server then calls the function in process; through its queue it
        # would call this app back over HTTP without the caller's API key and be refused.
        gr.Button("Ask").click(
            tool_for(state), [image, question, thinking], answer_box, api_name=TOOL_NAME, queue=False
        )
    return blocks


def mount_mcp(app, state):
    """Mount the MCP tool at /mcp (before the UI takes /); returns the app."""
    from starlette.routing import Mount

    from .auth import BearerGuard

    app = gr.mount_gradio_app(app, build_mcp_blocks(state), path=MOUNT_PATH, mcp_server=True, show_error=True)
    if state.settings.api_key:
        for route in app.router.routes:
            if isinstance(route, Mount) and route.path == MOUNT_PATH:
                route.app = BearerGuard(route.app, state.settings.api_key)
    log.info("MCP tool '%s' at %s/gradio_api/mcp/", TOOL_NAME, MOUNT_PATH)
    return app
