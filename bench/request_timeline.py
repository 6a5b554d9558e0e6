"""Where a load level's requests spend their time on the way to their first token and after their last:
each request stamped in the server's process (the API's handler entered, the engine's submit, the
worker's admission, the first text the engine emits, the engine's end of the request) and in the
clients' (sent, first text received, end of the stream). perf_counter is CLOCK_MONOTONIC on Linux, one
clock for the clients' process and the server's, so the stamps compare across them.

Requests are told apart by the "(client N)" every load-level question ends with.
"""

from __future__ import annotations

import functools
import re
import statistics
import time

from glm_vision.backend import handle as backend_handle
from glm_vision.engine import engine as engine_module
from glm_vision.engine import scheduler

CLIENT = re.compile(r"\(client (\d+)\)")
SERVER_STAGES = ("handler", "submit", "admit", "first_emit", "first_text", "finish")


@functools.cache
def request_timeline() -> RequestTimeline:
    """The process's one timeline (it wraps the classes' methods once)."""
    return RequestTimeline()


def _client_of(text: str) -> int | None:
    match = CLIENT.search(text)
    return int(match.group(1)) if match else None


class RequestTimeline:
    """Stamps each level request's stages in this (the server's) process while switched on."""

    def __init__(self) -> None:
        self.on = False
        self.stamps: dict[int, dict[str, float]] = {}  # client index -> stage -> perf_counter
        self._client_of_handle: dict[int, int] = {}  # RequestHandle.id -> client index
        self._wrap()

    def start(self) -> None:
        self.stamps.clear()
        self._client_of_handle.clear()
        self.on = True

    def stop(self) -> None:
        self.on = False

    def _stamp(self, client: int | None, stage: str) -> None:
        if self.on and client is not None:
            self.stamps.setdefault(client, {}).setdefault(stage, time.perf_counter())

    def _wrap(self) -> None:
        submit = engine_module.Engine.submit
        admit, emit = scheduler.Scheduler.admit, scheduler.Scheduler.emit
        finish = backend_handle.RequestHandle._finish

        def timed_submit(engine, request):
            client = _client_of(request.messages[-1].text)
            self._stamp(client, "submit")
            handle = submit(engine, request)
            if client is not None:
                self._client_of_handle[handle.id] = client
            return handle

        def timed_admit(sched, handle):
            self._stamp(self._client_of_handle.get(handle.id), "admit")
            return admit(sched, handle)

        def timed_emit(sched, seq, text):
            client = self._client_of_handle.get(seq.handle.id)
            self._stamp(client, "first_emit")
            if text:
                self._stamp(client, "first_text")
            return emit(sched, seq, text)

        def timed_finish(handle, result, error):
            self._stamp(self._client_of_handle.get(handle.id), "finish")
            return finish(handle, result, error)

        self._wrap_handler()
        engine_module.Engine.submit = timed_submit
        scheduler.Scheduler.admit = timed_admit
        scheduler.Scheduler.emit = timed_emit
        backend_handle.RequestHandle._finish = timed_finish

    def _wrap_handler(self) -> None:
        try:
            from glm_vision.api import chat_service
        except ImportError:  # --clients engine where the web stack is not installed: no handler to stamp
            return
        create = chat_service.ChatService.create

        async def timed_create(service, body, request):
            self._stamp(_client_of(str(body.messages[-1].content)), "handler")
            return await create(service, body, request)

        chat_service.ChatService.create = timed_create

    def summary(self, client_stamps: list) -> dict:
        """Each stage's offset from the level's first send (s: min / p50 / p95 / max over the requests), and
        the lags between the engine and the clients (first text emitted -> received, engine end -> stream end)."""
        sent = [s[0] for s in client_stamps if s and s[0] is not None]
        if not sent:
            return {}
        zero = min(sent)
        stages = {"sent": sent, "client_first": [s[1] for s in client_stamps if s and s[1] is not None]}
        stages.update({stage: [t[stage] for t in self.stamps.values() if stage in t] for stage in SERVER_STAGES})
        stages["client_end"] = [s[2] for s in client_stamps if s and s[2] is not None]
        summary = {name: _spread([t - zero for t in times]) for name, times in stages.items() if times}
        summary["first_text_lag"] = _spread(self._lags(client_stamps, 1, "first_text"))
        summary["end_lag"] = _spread(self._lags(client_stamps, 2, "finish"))
        return summary

    def _lags(self, client_stamps: list, position: int, stage: str) -> list[float]:
        return [
            client_stamps[client][position] - stamps[stage]
            for client, stamps in self.stamps.items()
            if stage in stamps
            and client < len(client_stamps)
            and client_stamps[client]
            and client_stamps[client][position] is not None
        ]


def _spread(values: list[float]) -> list[float] | None:
    """min, p50, p95, max (s), rounded to the ms."""
    if not values:
        return None
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return [round(v, 3) for v in (ordered[0], statistics.median(ordered), p95, ordered[-1])]


def timeline_table(rows: list[dict]) -> str:
    """One line a level and stage: when the requests reached it, from the level's first send."""
    lines = ["| level / clients | stage | min | p50 | p95 | max (s from the first send) |", "|---|---|---|---|---|---|"]
    for row in rows:
        for stage, spread in row.get("timeline", {}).items():
            if spread is not None:
                label = f"{row['streams']} x {row.get('tokens', '-')} / {row.get('clients', '-')}"
                lines.append(f"| {label} | {stage} | " + " | ".join(f"{v:.3f}" for v in spread) + " |")
    return "\n".join(lines)
