"""The one scripted backend every test uses where a model cannot show a behaviour (the tiny
checkpoint never writes `<think>`, a fixed answer is needed, a failure must be forced).

It implements the backend contract on the real `GpuWorker` and `RequestHandle`, with a script in
place of the model: everything between the backend and the client is production code."""

from __future__ import annotations

import time

from glm_vision.backend import BackendInfo, GenerationRequest, GenerationResult, Usage
from glm_vision.engine.serial import SerialScheduler
from glm_vision.engine.worker import GpuWorker


class ScriptedBackend:
    """Answers every request with `answer` (a string cut into `chunk`-character deltas, or the given
    list of deltas), honouring stop strings, max_new_tokens (one delta = one token) and cancel; with
    `error`, raises it after the deltas; with `delay_s`, waits that long before each delta (on the
    worker thread, so later requests stay queued behind a long answer)."""

    def __init__(
        self,
        answer: str | list[str],
        *,
        chunk: int = 3,
        error: BaseException | None = None,
        prompt_tokens: int = 11,
        cached_tokens: int = 4,
        model: str = "scripted-glm",
        is_demo: bool = False,
        queue_size: int = 8,
        delay_s: float = 0.0,
    ) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.chunk = chunk
        self.error = error
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = cached_tokens
        self.requests: list[GenerationRequest] = []
        self.closed_sessions: list[str] = []
        self.worker = GpuWorker(SerialScheduler(self._run), queue_size=queue_size, name="scripted")
        self.worker.start()
        self.info = BackendInfo(model=model, device="script", dtype="none", attn="none", is_demo=is_demo)
        self.healthy = True

    def _pieces(self, request: GenerationRequest) -> list[str]:
        if isinstance(self.answer, list):
            return list(self.answer)
        text = self.answer
        for stop in request.sampling.stop:
            index = text.find(stop)
            if index != -1:
                text = text[:index]
        return [text[i : i + self.chunk] for i in range(0, len(text), self.chunk)]

    def _run(self, request: GenerationRequest, cancel, emit) -> GenerationResult:
        self.requests.append(request)
        pieces = self._pieces(request)
        finish = "stop"
        if len(pieces) > request.sampling.max_new_tokens:
            pieces, finish = pieces[: request.sampling.max_new_tokens], "length"
        written = []
        for piece in pieces:
            if self.delay_s:
                time.sleep(self.delay_s)
            if cancel.is_set():
                finish = "cancelled"
                break
            emit(piece)
            written.append(piece)
        if self.error is not None:
            raise self.error
        usage = Usage(
            prompt_tokens=self.prompt_tokens, cached_tokens=self.cached_tokens, completion_tokens=len(written)
        )
        return GenerationResult(
            text="".join(written), finish_reason=finish, usage=usage, token_ids=tuple(range(len(written)))
        )

    def submit(self, request: GenerationRequest):
        return self.worker.submit(request)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        return self.submit(request).wait()

    def close_session(self, session_id: str) -> bool:
        self.closed_sessions.append(session_id)
        return False

    def stats(self) -> dict:
        return {"served": self.worker.served}

    def shutdown(self) -> None:
        self.worker.stop()
