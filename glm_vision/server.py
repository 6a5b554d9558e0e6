"""The one process: a FastAPI app serving /health, the /v1 API and the Gradio UI on one port.

The model loads in the background after the port is open; /health answers 503 until the engine
is loaded and warm. A model that cannot load stops the server with a clear message.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .backend import Backend
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class AppState:
    """What the adapters (UI, API) share: the settings and, once loaded, the backend."""

    settings: Settings
    backend: Backend | None = None  # the local Engine or a RemoteBackend
    load_error: str | None = None
    loaded: threading.Event = field(default_factory=threading.Event)

    @property
    def ready(self) -> bool:
        return self.backend is not None and self.backend.healthy


def create_app(state: AppState) -> FastAPI:
    app = FastAPI(
        title="glm-vision",
        description="GLM-4.6V-Flash on one GPU: a web UI and an OpenAI-compatible API on one port.",
        version="0.1.0",
    )
    app.state.glmv = state

    @app.get("/health", tags=["status"])
    def health():
        """200 with the model and device once the model is loaded and warm, 503 before (or if the GPU worker died)."""
        backend = state.backend
        if backend is None:
            status = "error" if state.load_error else "loading"
            return JSONResponse({"status": status, "error": state.load_error}, status_code=503)
        info = backend.info
        body = {"status": "ok" if backend.healthy else "unavailable", "model": info.model, "device": info.device,
                "demo": info.is_demo}
        return JSONResponse(body, status_code=200 if backend.healthy else 503)

    from .api import build_api_router, openai_not_found  # the OpenAI-compatible /v1 routes
    from .ui import mount_ui  # the Gradio web UI at /

    app.include_router(build_api_router(state))
    app.add_exception_handler(404, openai_not_found)
    if state.settings.mcp:
        from .api.mcp import mount_mcp  # the MCP tool at /mcp, mounted before the UI takes /

        app = mount_mcp(app, state)
    app = mount_ui(app, state)
    return app


def load_backend(settings: Settings):
    if settings.backend == "openai":
        from .remote import RemoteBackend

        return RemoteBackend.connect(settings)
    from .engine import Engine

    engine = Engine.load(settings)
    engine.warmup()
    return engine


def serve(settings: Settings) -> int:
    import uvicorn

    if settings.host not in {"127.0.0.1", "localhost", "::1"} and not settings.api_key:
        log.warning(
            "listening on %s without --api-key: anyone who can reach this port can use the model and read the "
            "conversations of this server; set --api-key KEY (or GLMV_API_KEY)", settings.host,
        )
    state = AppState(settings)
    app = create_app(state)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    exit_code = 0

    def load() -> None:
        nonlocal exit_code
        from .backend import ModelLoadError

        try:
            state.backend = load_backend(settings)
            info = state.backend.info
            log.info("ready: %s on %s%s", info.model, info.device, " (demo model)" if info.is_demo else "")
        except ModelLoadError as exc:
            state.load_error = str(exc)
            log.error("cannot start: %s", exc)
            exit_code = 3
            server.should_exit = True
        except Exception as exc:  # noqa: BLE001 - anything else that stops the model loading: say what, exit
            state.load_error = f"{type(exc).__name__}: {exc}"
            log.error("cannot start: the model failed to load: %s", state.load_error)
            exit_code = 3
            server.should_exit = True
        finally:
            state.loaded.set()

    threading.Thread(target=load, name="glm-vision-load", daemon=True).start()
    server.run()
    if state.backend is not None:
        state.backend.shutdown()
    return exit_code
