"""The serving process's long-lived heap frozen out of the garbage collector's walks once it is up: what is
garbage then is collected first, what is alive is no longer walked by any later collection, and the server's
backend loader (and the batch CLI) freeze it once the backend is ready."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace

import pytest

from glm_vision import server
from glm_vision.heap import freeze_startup_heap
from glm_vision.settings import Settings


class Node:
    pass


@pytest.fixture
def unfrozen():
    """The test process's collector as it was: nothing frozen before, everything unfrozen after."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freezing_collects_the_garbage_and_takes_the_living_out_of_the_walks(unfrozen):
    alive = Node()
    alive.me = alive  # a cycle: tracked by the collector
    garbage = Node()
    garbage.me = garbage
    gone = weakref.ref(garbage)
    del garbage
    assert any(o is alive for o in gc.get_objects())
    frozen = freeze_startup_heap()
    assert gone() is None  # collected, not frozen
    assert frozen == gc.get_freeze_count() > 0
    assert not any(o is alive for o in gc.get_objects())  # no collection walks it any more
    gc.unfreeze()
    assert any(o is alive for o in gc.get_objects())


def test_the_server_freezes_its_heap_once_the_backend_is_ready(unfrozen, monkeypatch):
    backend = SimpleNamespace(info=SimpleNamespace(model="m", device="cpu", is_demo=True))
    frozen_at_load = []

    def load(settings):
        frozen_at_load.append(gc.get_freeze_count())
        return backend

    monkeypatch.setattr(server, "load_backend", load)
    state = server.AppState(Settings())
    loader = server.BackendLoader(state, SimpleNamespace(should_exit=False))
    loader.run()
    assert state.backend is backend and state.loaded.is_set() and loader.exit_code == 0
    assert frozen_at_load == [0] and gc.get_freeze_count() > 0


def test_a_backend_that_cannot_load_freezes_nothing(unfrozen, monkeypatch):
    def fail(settings):
        raise server.ModelLoadError("no weights here")

    monkeypatch.setattr(server, "load_backend", fail)
    loader = server.BackendLoader(server.AppState(Settings()), SimpleNamespace(should_exit=False))
    loader.run()
    assert loader.exit_code == server.EXIT_LOAD_FAILED and gc.get_freeze_count() == 0
