"""`RequestHandle.on_done`: a caller's callback once the request has ended, whichever way it ended."""

from __future__ import annotations

import logging

from glm_vision.backend import EngineError, GenerationRequest, GenerationResult, RequestHandle, Usage
from glm_vision.conversation import Message


def _handle() -> RequestHandle:
    return RequestHandle(GenerationRequest([Message("user", "hi")]))


def _result() -> GenerationResult:
    return GenerationResult(
        text="ok", finish_reason="stop", usage=Usage(prompt_tokens=1, completion_tokens=1), token_ids=(1,)
    )


def test_callbacks_run_once_when_the_request_ends_or_at_once_after(caplog):
    handle, calls = _handle(), []
    handle.on_done(lambda: calls.append("before"))
    handle.on_done(lambda: 1 / 0)  # a failing callback is logged; the others and the caller still get theirs
    handle.on_done(lambda: calls.append("also before"))
    assert calls == []
    with caplog.at_level(logging.ERROR):
        handle._finish(_result(), None)
    assert calls == ["before", "also before"]
    assert "on_done callback failed" in caplog.text
    assert handle.wait().text == "ok"
    handle.on_done(lambda: calls.append("after"))
    assert calls == ["before", "also before", "after"]


def test_a_request_that_failed_has_ended_too():
    handle, calls = _handle(), []
    handle.on_done(lambda: calls.append(handle.error))
    handle._finish(None, EngineError("cancelled before it started"))
    assert len(calls) == 1 and "cancelled" in str(calls[0])
