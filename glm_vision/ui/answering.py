"""A tab's answer from the question to the finished chat: the request submitted, the wait in the
queue shown, the reasoning and answer streamed, then the chat committed (or, on failure or a Stop
before the first word, put back as it was with the question in the input box).

A part of `ChatSession` (session.py), on its state: the backend (`state`), the widgets (`w`), the chat
(`transcript`, `controls`, `usage`, `epoch`), the running request (`run`) and the saved copies (`saved`).
"""

from __future__ import annotations

import time

import gradio as gr

from ..backend import EngineError, GenerationRequest, GenerationResult, RequestHandle, answer_deltas
from ..conversation import split_output
from .controls import Controls
from .render import status_markdown, usage_dict
from .text import say
from .transcript import Transcript, Turn

STREAM_INTERVAL_S = 0.05  # at most ~20 display updates a second
QUEUE_POLL_S = 0.25


class Answering:
    def _generate(self, work: Transcript, controls: Controls, restore_input=None):
        """Stream an answer to `work` (which ends with a user turn); on failure go back to the chat as it was."""
        base, epoch = self.transcript, self.epoch
        if self.state.backend is None:
            yield self._back(base, restore_input, error=say(self.lang, "err_not_ready"))
            return
        if self.run is not None:
            yield self._error("err_busy")
            return
        try:
            handle = self.state.backend.submit(self._request(work, controls))
        except EngineError as exc:
            yield self._back(base, restore_input, error=exc.message)
            return
        self.run, self.transcript, self.controls = handle, work, controls
        if self.ended:  # the tab closed while this answer was being submitted
            self.leave()
        try:
            for update in self._answer(handle, work, base, epoch, restore_input):
                if self.epoch != epoch:  # New chat or Import replaced the chat: this answer is not shown
                    yield self._view()  # (Gradio shows an event's last update again when it ends)
                    return
                yield update
        finally:
            if self.run is handle:
                self.run = None
            handle.cancel()  # harmless once finished; stops the GPU work when the tab went away mid-answer

    def _answer(self, handle: RequestHandle, work: Transcript, base: Transcript, epoch: int, restore_input):
        """The wait in the queue, the answer as it is written, then the finished chat (or, on failure, the
        chat as it was)."""
        try:
            yield from self._wait_in_queue(handle, work)
            result = yield from self._stream(handle, work)
        except EngineError as exc:
            if handle.cancelled.is_set():  # stopped while still waiting in the queue
                yield self._back(base, restore_input, epoch, notice=say(self.lang, "stopped_queued"))
            else:
                yield self._back(base, restore_input, epoch, error=exc.message)
            return
        if result.finish_reason == "cancelled" and not result.text:  # stopped before a word was written
            yield self._back(base, restore_input, epoch, notice=say(self.lang, "stopped_queued"))
        else:
            yield self._finish(work, result, epoch)

    def _request(self, work: Transcript, controls: Controls) -> GenerationRequest:
        return GenerationRequest(
            work.engine_messages(controls.system_prompt),
            controls.sampling(),
            session_id=self.engine_session,
            enable_thinking=bool(controls.thinking),
            max_image_tokens=int(controls.image_tokens),
            thinking_budget=int(controls.thinking_budget) or None,
        )

    def _wait_in_queue(self, handle: RequestHandle, work: Transcript):
        """The input turns into a Stop button and the browser keeps the question (a reload gives it back);
        the queue position is shown until the answer starts."""
        first = {
            self.w.textbox: gr.MultimodalTextbox(value=None, submit_btn=False, stop_btn=True),
            self.w.error: "",
            self.w.notice: "",
        } | self.saved.sent(work, self.controls, self.lang)  # a kill from here on keeps the question
        while handle.queue_position > 0:
            if handle.cancelled.is_set():  # Stop pressed: done now, whenever the queue drops it
                raise EngineError("stopped in the queue")
            yield first | self._pending(work, say(self.lang, "queued", position=handle.queue_position))
            first = {}
            time.sleep(QUEUE_POLL_S)
        yield first | self._pending(work, say(self.lang, "generating"))

    def _pending(self, work: Transcript, activity: str) -> dict:
        return {
            self.w.chatbot: self._messages(work, ("", ""), pending=True)[0],
            self.w.status: status_markdown(self.state, self.lang, self.usage, activity),
        }

    def _stream(self, handle: RequestHandle, work: Transcript):
        """Show the reasoning and the answer while they are written; returns the backend's result."""
        reasoning = answer = ""
        last = 0.0
        for item in answer_deltas(handle):
            if isinstance(item, GenerationResult):
                return item
            reasoning, answer = reasoning + item.reasoning, answer + item.answer
            if time.monotonic() - last >= STREAM_INTERVAL_S:
                last = time.monotonic()
                yield {self.w.chatbot: self._messages(work, (reasoning, answer), pending=True)[0]}
        raise EngineError("the answer ended without a result")

    def _finish(self, work: Transcript, result: GenerationResult, epoch: int) -> dict:
        parsed = split_output(result.text)
        usage = usage_dict(result.usage)
        work.turns.append(
            Turn(
                "assistant",
                parsed.raw_answer,
                reasoning=parsed.reasoning,
                finish_reason=result.finish_reason,
                usage=usage,
            )
        )
        if not self._commit(work, epoch, usage):
            return {}
        activity = say(self.lang, "stopped") if result.finish_reason == "cancelled" else ""
        return {
            self.w.chatbot: self._messages(work)[0],
            self.w.error: "",
            self.w.status: status_markdown(self.state, self.lang, usage, activity),
            self.w.textbox: gr.MultimodalTextbox(submit_btn=True, stop_btn=False),
        } | self.save()

    def _back(
        self, base: Transcript, restore_input=None, epoch: int | None = None, *, error: str = "", notice: str = ""
    ) -> dict:
        """The chat as it was before a question that got no answer (its text and files back in the input)."""
        if not self._commit(base, self.epoch if epoch is None else epoch):
            return {}
        return {
            self.w.chatbot: self._messages(base)[0],
            self.w.notice: notice,
            self.w.error: say(self.lang, "error_prefix") + error if error else "",
            self.w.status: status_markdown(self.state, self.lang, self.usage),
            self.w.textbox: gr.MultimodalTextbox(value=restore_input, submit_btn=True, stop_btn=False),
        } | self.saved.sent(base, self.controls, self.lang)
