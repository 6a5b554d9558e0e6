"""One request at a time through a plain function, behind the same worker as the model's scheduler."""

from __future__ import annotations

import logging

from ..backend import EngineError

log = logging.getLogger(__name__)


class SerialScheduler:
    """One request at a time through a plain function `run(request, cancel, emit) -> GenerationResult`:
    the worker's contract for backends that are not a local model (test doubles)."""

    def __init__(self, run) -> None:
        self.run = run
        self.current = None
        self.served = 0
        self.max_batch = 1
        self.rows: list = []
        self.prefilling: list = []

    @property
    def idle(self) -> bool:
        return self.current is None

    @property
    def room(self) -> int:
        return 0 if self.current is not None else 1

    def busy_sessions(self) -> set[str]:
        return set()

    def admit(self, handle) -> None:
        self.current = handle

    def step(self) -> None:
        handle, self.current = self.current, None
        try:
            result = self.run(handle.request, handle.cancelled, handle._emit)
            self.served += 1
            handle._finish(result, None)
        except EngineError as exc:
            handle._finish(None, exc)
        except Exception as exc:  # noqa: BLE001 - one bad request must not kill the worker
            log.exception("request failed")
            handle._finish(None, EngineError(f"internal error while generating: {type(exc).__name__}: {exc}"))

    def abort(self, error: BaseException) -> None:
        if self.current is not None:
            self.current._finish(None, error)
            self.current = None
