"""The worker admits waiting requests one at a time, only while the scheduler wants more prompts, so that a
burst is not admitted whole (host work) before the GPU gets its first step."""

from __future__ import annotations

import threading

from glm_vision.backend import GenerationRequest
from glm_vision.conversation import Message
from glm_vision.engine.worker import GpuWorker
from tests.api_helpers import wait_until


class RecordingScheduler:
    """Prefills one admitted request a step; wants another prompt while fewer than `ahead` wait. The first
    admission is held until `go` is set, so that the whole burst is waiting by then."""

    def __init__(self, ahead: int) -> None:
        self.ahead = ahead
        self.events: list[str] = []
        self.prefilling: list = []
        self.rows: list = []
        self.max_batch = 16
        self.served = 0
        self.go = threading.Event()

    @property
    def idle(self) -> bool:
        return not self.prefilling

    @property
    def room(self) -> int:
        return self.max_batch - len(self.prefilling)

    @property
    def wants_prompts(self) -> bool:
        return len(self.prefilling) < self.ahead

    def busy_sessions(self) -> set[str]:
        return set()

    def admit(self, handle) -> None:
        assert self.go.wait(30)
        self.events.append(f"admit {handle.request.messages[0].text}")
        self.prefilling.append(handle)

    def step(self) -> None:
        self.events.append(f"step {self.prefilling.pop(0).request.messages[0].text}")
        self.served += 1

    def abort(self, error: BaseException) -> None:
        self.prefilling.clear()


def test_a_burst_is_admitted_as_the_scheduler_asks_not_all_before_the_first_step():
    scheduler = RecordingScheduler(ahead=2)
    worker = GpuWorker(scheduler, queue_size=16, name="admission-test")
    worker.start()
    try:
        handles = [worker.submit(GenerationRequest([Message("user", str(i))])) for i in range(6)]
        scheduler.go.set()
        wait_until(lambda: scheduler.served == 6, what="six steps")
    finally:
        worker.stop()
    assert scheduler.events == [
        "admit 0", "admit 1", "step 0", "admit 2", "step 1", "admit 3", "step 2", "admit 4", "step 3", "admit 5",
        "step 4", "step 5",
    ]  # fmt: skip
    assert [h.queue_position for h in handles] == [0] * 6  # all were taken from the queue


def test_waiting_requests_keep_their_queue_positions_until_admitted():
    scheduler = RecordingScheduler(ahead=1)
    worker = GpuWorker(scheduler, queue_size=16, name="admission-test")
    worker.start()
    try:
        handles = [worker.submit(GenerationRequest([Message("user", str(i))])) for i in range(3)]
        wait_until(lambda: handles[0].queue_position == 0, what="the first admission to start")
        assert [h.queue_position for h in handles[1:]] == [1, 2]  # the first admission is held: none taken yet
        scheduler.go.set()
        wait_until(lambda: scheduler.served == 3, what="three steps")
    finally:
        worker.stop()
    assert scheduler.events == ["admit 0", "step 0", "admit 1", "step 1", "admit 2", "step 2"]
