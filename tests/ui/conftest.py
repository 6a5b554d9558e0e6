"""Fixtures of the browser tests, shared by every module here (one engine, one server, one Chromium for
the whole package): the UI served on a free loopback port with the tiny checkpoint."""

from __future__ import annotations

import playwright.sync_api as playwright_api
import pytest

from glm_vision.server import AppState
from glm_vision.settings import Settings
from tests.conftest import make_picture
from tests.doubles import ScriptedBackend

from .ui_support import CHROMIUM, CHROMIUM_ARGS, SlowEmit, UiServer, open_page


@pytest.fixture(scope="package")
def ui_engine(tiny_model_dir):
    from glm_vision.engine import Engine

    settings = Settings(
        model=str(tiny_model_dir),
        device="cpu",
        max_context_tokens=2048,
        max_new_tokens=12,
        max_images_per_message=3,
        max_upload_mb=1.0,
        pdf_max_pages=3,
        pdf_dpi=36,
    )
    engine = Engine.load(settings)
    engine.warmup()
    slow = SlowEmit(engine)
    yield engine, settings, slow
    engine.shutdown()


@pytest.fixture(scope="package")
def server(ui_engine):
    engine, settings, _ = ui_engine
    state = AppState(settings, backend=engine)
    with UiServer(state) as srv:
        yield srv


@pytest.fixture(scope="package")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    yield ctx
    ctx.close()


@pytest.fixture
def page(context, server):
    return open_page(context, server.url)


@pytest.fixture
def picture_file(tmp_path):
    path = tmp_path / "shapes.png"
    make_picture(7).save(path)
    return path


BOXES_ANSWER = [  # two deltas: the test server's max_new_tokens is 12 (one delta = one token)
    "Submit: <|begin_of_box|>[100,200,400,500]<|end_of_box|>\n",
    "Cancel: <|begin_of_box|>[500,600,900,800]<|end_of_box|>",
]


@pytest.fixture
def scripted(server):
    """The UI server answers with two labelled boxes (`BOXES_ANSWER`) for one test."""
    real = server.state.backend
    server.state.backend = ScriptedBackend(BOXES_ANSWER, is_demo=True)
    yield
    server.state.backend = real
