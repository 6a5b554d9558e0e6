"""`RequestHandle`: `on_done`, a caller's callback once the request has ended, whichever way it ended; async
iteration, which joins the text deltas that queued up while its consumer was busy."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from glm_vision.backend import EngineError, GenerationRequest, GenerationResult, RequestHandle, Usage
from glm_vision.backend.results import Choice, ChoiceEnd, TextDelta, TokenLogprob
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


def _delta(text: str, index: int = 0, token: int | None = None) -> TextDelta:
    logprobs = (TokenLogprob(f"<{token}>", -0.5),) if token is not None else ()
    return TextDelta(text, index, logprobs)


async def _drain(handle: RequestHandle) -> list:
    return [item async for item in handle]


def test_text_queued_while_the_consumer_was_busy_comes_as_one_delta_per_choice():
    """Deltas that queued up behind each other (a loop serving many streams fell behind) are joined, their
    logprobs kept in order; a choice's end, another choice's text and the result are not joined into them."""
    handle = _handle()
    for i, text in enumerate(["Hel", "lo", " wor"]):
        handle._put(_delta(text, token=i))
    handle._put(_delta("other", index=1, token=9))
    handle._put(_delta("ld", token=3))
    handle._choice_end(Choice(index=1, text="other", finish_reason="stop", token_ids=(9,)))
    handle._put(_delta("!", token=4))
    handle._finish(_result(), None)
    items = asyncio.run(_drain(handle))
    texts = [(item.text, item.index, [lp.token for lp in item.logprobs]) for item in items[:3]]
    assert texts == [("Hello wor", 0, ["<0>", "<1>", "<2>"]), ("other", 1, ["<9>"]), ("ld", 0, ["<3>"])]
    assert isinstance(items[3], ChoiceEnd) and items[4].text == "!" and items[5].text == "ok"


def test_a_consumer_waiting_on_its_loop_gets_every_delta_put_from_another_thread():
    """One wake-up at a time: deltas put from a backend thread while a wake-up is pending are found by the
    consumer it wakes, and nothing is lost however the puts and the consumer's turns interleave."""
    handle = _handle()

    def backend():
        for i in range(2000):
            handle._put(_delta(str(i % 10)))
            if i % 97 == 0:
                time.sleep(0.001)  # let the consumer catch up and wait again now and then
        handle._finish(_result(), None)

    async def consume():
        thread = threading.Thread(target=backend)
        thread.start()
        items = await _drain(handle)
        thread.join()
        return items

    items = asyncio.run(consume())
    text = "".join(item.text for item in items[:-1])
    assert text == "".join(str(i % 10) for i in range(2000)) and items[-1].text == "ok"
    assert 1 < len(items) - 1 < 2000  # joined while the consumer was busy, woken more than once


def test_many_consumers_on_one_loop_share_wake_ups_and_lose_nothing():
    """A decode step hands a token to every stream's consumer on the API's loop: the consumers waiting on one
    loop are woken together (far fewer writes to the loop's pipe than tokens), and each gets all its text."""
    handles, steps = [_handle() for _ in range(64)], 200
    scheduled = []

    def backend():
        for step in range(steps):
            for handle in handles:
                handle._put(_delta(str(step % 10)))
            time.sleep(0.0005 if step % 3 else 0)  # a decode step's time, now and then none
        for handle in handles:
            handle._finish(_result(), None)

    async def consume():
        loop = asyncio.get_running_loop()
        call_soon_threadsafe = loop.call_soon_threadsafe

        def counted(*args):
            scheduled.append(threading.current_thread().name)
            return call_soon_threadsafe(*args)

        loop.call_soon_threadsafe = counted
        tasks = [asyncio.create_task(_drain(handle)) for handle in handles]
        await asyncio.sleep(0)  # every consumer is waiting before the first token
        thread = threading.Thread(target=backend, name="backend")
        thread.start()
        results = await asyncio.gather(*tasks)
        thread.join()
        return results

    expected = "".join(str(step % 10) for step in range(steps))
    for items in asyncio.run(consume()):
        assert "".join(item.text for item in items[:-1]) == expected and items[-1].text == "ok"
    # About one a step when the loop waits for the worker (~200 here); a few a step when the two threads take
    # turns within one step's puts (up to ~1,100 on a loaded 2-core machine); one a token before (12,864).
    assert 1 < len(scheduled) < steps * len(handles) // 4


def test_the_wake_cost_bench_hands_every_consumer_its_tokens():
    from bench.wake_cost import measure

    row = measure(streams=8, steps=30, step_s=0.001)
    assert row["worker_us"] > 0 and row["loop_us"] > 0
