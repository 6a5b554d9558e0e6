"""The one process: a FastAPI app serving /health, the /v1 API, /mcp and the Gradio UI on one port.

The backend loads in the background after the port is open; /health answers 503 until it is loaded
and warm. A backend that cannot load stops the server with a clear message (exit status 3); a port
that cannot be listened on is exit status 4.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .backend import Backend, ModelLoadError
from .heap import freeze_startup_heap
from .http_protocol import http_protocol
from .settings import Settings

if TYPE_CHECKING:
    from .history import ChatStore

log = logging.getLogger(__name__)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
EXIT_LOAD_FAILED, EXIT_CANNOT_LISTEN = 3, 4


@dataclass
class AppState:
    """What the adapters (UI, API, MCP) share: the settings, the chat history and, once loaded, the backend."""

    settings: Settings
    backend: Backend | None = None  # the local Engine or a RemoteBackend
    history: ChatStore | None = None  # None: chats live in the tab only (--no-history, or it could not open)
    history_banner: str = ""  # why the history is off when it could not open: the UI shows it
    load_error: str | None = None
    loaded: threading.Event = field(default_factory=threading.Event)

    @property
    def ready(self) -> bool:
        return self.backend is not None and self.backend.healthy


def health_body(state: AppState) -> tuple[dict, int]:
    backend = state.backend
    if backend is None:
        return {"status": "error" if state.load_error else "loading", "error": state.load_error}, 503
    info, healthy = backend.info, backend.healthy
    body = {
        "status": "ok" if healthy else "unavailable",
        "model": info.model,
        "device": info.device,
        "demo": info.is_demo,
        "max_image_tokens": info.max_image_tokens,
        "history": state.history is not None,
    }
    return body, 200 if healthy else 503


def create_api_app(state: AppState) -> FastAPI:
    """/health and the /v1 API only. Imports no Gradio, so it also serves where the UI's stack is not
    installed (bench/bench_http.py on the GPU machine); `create_app` builds on it."""
    app = FastAPI(
        title="glm-vision",
        version="0.1.0",
        description="GLM-4.6V-Flash on one GPU: a web UI and an OpenAI-compatible API on one port.",
    )
    app.state.glmv = state

    @app.get("/health", tags=["status"])
    def health():
        """200 with the model and device once the backend is loaded and warm, 503 before (or when the GPU
        worker died, or the remote server cannot be reached). HEAD works too (load balancers)."""
        body, status = health_body(state)
        return JSONResponse(body, status_code=status)

    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)

    from .api import build_api_router, openai_not_found  # the OpenAI-compatible /v1 routes

    app.include_router(build_api_router(state))
    app.add_exception_handler(404, openai_not_found)
    return app


def create_app(state: AppState) -> FastAPI:
    """The product's app: `create_api_app` plus /mcp and the Gradio UI at /."""
    from .ui import mount_ui  # the Gradio web UI at /

    app = create_api_app(state)
    if state.settings.mcp:
        from .api.mcp import mount_mcp  # the MCP tool at /mcp, mounted before the UI takes /

        app = mount_mcp(app, state)
    app = mount_ui(app, state)
    if state.history is not None:
        from .history import OwnerCookieMiddleware  # each browser's own chats

        app.add_middleware(OwnerCookieMiddleware)
    return app


PYTHON_SWITCH_INTERVAL_S = 0.005  # the interpreter's own
# On a GPU the engine's worker gives the GIL up for every CUDA call and then waits up to the switch interval to
# get it back from the event loop's thread: 1 ms served the load levels through the API faster on the H200, in
# four of four same-call runs (32 x 1024 +0.4 and +1.1 %, 64 x 1024 +2.0 and +0.4 %: bench/RESULTS.md, twentieth
# and twenty-first sessions). Not measured on the CPU, which keeps the interpreter's.
GPU_SWITCH_INTERVAL_S = 0.001


def switch_interval_for(device: str) -> float:
    """The GIL switch interval (seconds) a server with a local engine on `device` runs under."""
    return GPU_SWITCH_INTERVAL_S if device.startswith("cuda") else PYTHON_SWITCH_INTERVAL_S


def load_backend(settings: Settings, *, warm: bool = True) -> Backend:
    if settings.backend == "openai":
        from .remote import RemoteBackend

        return RemoteBackend.connect(settings)
    try:
        from .engine.engine import Engine
    except ImportError as exc:
        raise ModelLoadError(
            f"the local backend needs torch and transformers ({exc}); install them with "
            "`pip install 'glm-vision[local]'` (or requirements.txt), or front a running server with "
            "--backend openai --api-base URL"
        ) from None
    engine = Engine.load(settings)
    sys.setswitchinterval(switch_interval_for(engine.info.device))
    if warm:
        engine.warmup()
    return engine


class BackendLoader(threading.Thread):
    """Loads the backend while the server already answers (/health says "loading"); stops the server
    with exit status 3 when it cannot load."""

    def __init__(self, state: AppState, server) -> None:
        super().__init__(name="glm-vision-load", daemon=True)
        self.state, self.server = state, server
        self.exit_code = 0

    def run(self) -> None:
        try:
            self.state.backend = load_backend(self.state.settings)
            frozen = freeze_startup_heap()
            info = self.state.backend.info
            log.info("ready: %s on %s%s", info.model, info.device, " (demo model)" if info.is_demo else "")
            log.debug("%d objects frozen out of the garbage collector's walks", frozen)
        except Exception as exc:  # noqa: BLE001 - anything that stops the model loading: say what, exit
            detail = str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
            self.state.load_error = detail
            log.error("cannot start: %s", detail)
            self.exit_code = EXIT_LOAD_FAILED
            self.server.should_exit = True
        finally:
            self.state.loaded.set()


def _stop_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


def run_server(server, settings: Settings) -> int | None:
    """Serve until stopped; the exit status a signal or a failed start asks for, None otherwise.

    uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal: our handler turns
    it into SystemExit, so the backend is stopped and the private temp directory removed (atexit)
    instead of the process dying on the default handler."""
    previous = signal.signal(signal.SIGTERM, _stop_on_signal)
    try:
        server.run()
    except SystemExit as exc:
        if not server.started:
            log.error(
                "cannot listen on %s:%d (is another server using the port? choose one with --port)",
                settings.host,
                settings.port,
            )
            return EXIT_CANNOT_LISTEN
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return None


def serve(settings: Settings) -> int:
    import uvicorn

    if settings.host not in LOCAL_HOSTS and not settings.api_key:
        log.warning(
            "listening on %s without --api-key: anyone who can reach this port can use the model and read "
            "the conversations of this server; set --api-key KEY (or GLMV_API_KEY)",
            settings.host,
        )
    from .history import open_history

    history, banner = open_history(settings)
    state = AppState(settings, history=history, history_banner=banner)
    config = uvicorn.Config(
        create_app(state),
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=5,
        http=http_protocol(),
    )
    server = uvicorn.Server(config)
    loader = BackendLoader(state, server)
    loader.start()
    try:
        stopped = run_server(server, settings)
    finally:
        if state.backend is not None:
            state.backend.shutdown()
        if state.history is not None:
            state.history.close()
    return stopped if stopped is not None else loader.exit_code
