"""The API modules' default server: the tiny engine behind the app, every request it submits recorded. A module
that needs other settings defines its own `server`."""

from __future__ import annotations

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
