"""The API modules' default server: the tiny engine behind the app, every request it submits recorded. A module
that needs other settings defines its own `server`. `capped_server` is the error tests' server: the tiny engine
with uploads capped at 0.05 MB."""

from __future__ import annotations

from dataclasses import replace

import pytest

from glm_vision.server import AppState
from tests.api_helpers import RecordingBackend, serve


@pytest.fixture(scope="module")
def recorded(engine):
    return RecordingBackend(engine)


@pytest.fixture(scope="module")
def server(settings, recorded):
    live = serve(AppState(settings, backend=recorded))
    yield live
    live.__exit__()


@pytest.fixture(scope="module")
def capped_server(settings, engine):
    live = serve(AppState(replace(settings, max_upload_mb=0.05), backend=engine))
    yield live
    live.__exit__()
