"""Continuous batching: which sequences prefill and decode at each step (nano-vllm's `scheduler.py`).

Running sequences decode together, one token each per step, in slab slots 0..B-1; a new request
joins once its prompt is prefilled, chunk by chunk between decode steps so that running streams
never wait for a whole prompt; finished or stopped sequences leave between steps.

Each step is pipelined: the tokens sampled last step are copied to the host while the GPU already
runs this step with them, so Python's bookkeeping overlaps the GPU work instead of idling it.
"""

from __future__ import annotations

import logging

import torch

from .runner import ModelRunner
from .sequence import Sequence
from ..backend import EngineError, GpuOutOfMemoryError

log = logging.getLogger(__name__)

OOM_MESSAGE = (
    "the GPU ran out of memory for this request; lower the image resolution budget, send fewer images or "
    "start a new chat. The server is still running."
)


class _HostCopy:
    """Token ids copied to pinned host memory, waited for alone (not for the step queued after them)."""

    def __init__(self, slots: int, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.buffer = torch.zeros(slots, dtype=torch.long, pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None

    def start(self, tokens: torch.Tensor) -> None:
        self.buffer[: tokens.shape[0]].copy_(tokens, non_blocking=self.cuda)
        if self.event is not None:
            self.event.record()

    def wait(self, count: int) -> list[int]:
        if self.event is not None:
            self.event.synchronize()
        return self.buffer[:count].tolist()


class Scheduler:
    def __init__(self, runner: ModelRunner, sessions, *, max_batch: int, use_caches: bool) -> None:
        self.runner = runner
        self.sessions = sessions
        self.use_caches = use_caches
        self.max_batch = min(max_batch, runner.slab.slots)
        self.rows: list[Sequence] = []  # decoding; row i lives in slot i
        self.prefilling: list[Sequence] = []  # in slots taken from the top
        self._copy = _HostCopy(runner.slab.slots, runner.device)
        self._sampled_rows: list[Sequence] = []  # the rows of the last decode step, and what it sampled
        self._sampled: torch.Tensor | None = None
        self.served = 0
        self.peak_batch = 0  # most sequences decoded in one step so far

    # ------------------------------------------------------------------ admission
    @property
    def idle(self) -> bool:
        return not self.rows and not self.prefilling

    @property
    def room(self) -> int:
        return self.max_batch - len(self.rows) - sum(s.request.n for s in self.prefilling)  # n choices: n rows

    def emit(self, seq: Sequence, text: str) -> None:
        """Where every text delta leaves the engine (tests wrap this to slow or hold the worker)."""
        seq.handle._emit(text, seq.index, seq.release_logprobs())

    def busy_sessions(self) -> set[str]:
        return {s.request.session_id for s in self.rows + self.prefilling if s.request.session_id is not None}

    def _free_top_slot(self) -> int:
        taken = {s.slot for s in self.rows + self.prefilling}
        return next(slot for slot in range(self.runner.slab.slots - 1, -1, -1) if slot not in taken)

    @torch.inference_mode()
    def admit(self, handle) -> None:
        """Start a request (prompt checks happen here, before any GPU work); errors go to its handle."""
        session = None
        if self.use_caches and handle.request.session_id is not None:
            session = self.sessions.acquire(handle.request.session_id, handle.request.cache_scope)
        try:
            seq = self.runner.start(handle, session, self._free_top_slot(), shared=self.sessions.shared_prefix)
        except BaseException as exc:
            if session is not None:
                self.sessions.release(session)
            handle._finish(None, exc if isinstance(exc, EngineError) else EngineError(f"{type(exc).__name__}: {exc}"))
            return
        self.prefilling.append(seq)

    # ------------------------------------------------------------------ one step
    @torch.inference_mode()
    def step(self) -> None:
        rows = list(self.rows)
        sampled = None
        self.peak_batch = max(self.peak_batch, len(rows))
        if rows:
            # Same rows as last step: their pending tokens are exactly last step's sampled tensor.
            tokens = self._sampled if rows == self._sampled_rows else torch.stack([s.pending for s in rows])
            self._copy.start(tokens)
            try:
                logits = self.runner.forward.decode(tokens, [s.next_position for s in rows], [s.length for s in rows])
                # all rows; those that finish now drop theirs. Guided rows read the fed tokens first.
                sampled = self.runner.sample(rows, logits, lambda: self._copy.wait(len(rows)))
            except torch.OutOfMemoryError as exc:
                log.error("out of GPU memory in a decode step of %d sequences: %s", len(rows), exc)
                self._fail_all(GpuOutOfMemoryError(OOM_MESSAGE))
                return
        if self.prefilling:
            self._prefill_one_chunk()
        if rows:
            ids = self._copy.wait(len(rows))
            finished = []
            for index, (seq, token_id) in enumerate(zip(rows, ids)):
                if self.runner.accept(seq, token_id, lambda text, seq=seq: self.emit(seq, text)):
                    self.runner.advance(seq, token_id, sampled[index])
                else:
                    finished.append(seq)
            for seq in finished:
                self._retire(seq)
            self._sampled_rows, self._sampled = (rows, sampled) if not finished else ([], None)
        self._join_prefilled()

    def _prefill_one_chunk(self) -> None:
        seq = self.prefilling[0]
        if seq.handle.cancelled.is_set():  # stopped before its first token: no more GPU work for it
            self.prefilling.remove(seq)
            seq.finish_reason = "cancelled"
            result = self.runner.finish(seq, lambda text: self.emit(seq, text))
            self._release(seq)
            seq.handle._finish(result, None)  # no choice has started: no family yet
            return
        # While others stream, smaller chunks keep their next token from waiting on a whole prompt.
        limit = self.runner.prefill_chunk_tokens
        if self.rows:
            limit = max(256, limit // 4)
        try:
            self.runner.prefill_chunk(seq, limit)
        except torch.OutOfMemoryError as exc:
            log.error("out of GPU memory prefilling a %d-token prompt: %s", len(seq.prompt), exc)
            self.prefilling.remove(seq)
            self._end(seq, GpuOutOfMemoryError(OOM_MESSAGE), keep_kv=False)
            self.runner.free_memory()
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the others
            log.exception("prefill failed")
            self.prefilling.remove(seq)
            self._end(seq, exc if isinstance(exc, EngineError) else EngineError(f"{type(exc).__name__}: {exc}"), keep_kv=False)

    def _join_prefilled(self) -> None:
        slab = self.runner.slab
        for seq in [s for s in self.prefilling if s.pending is not None]:
            self.prefilling.remove(seq)
            target = len(self.rows)
            if seq.slot != target:
                holder = next((s for s in self.prefilling if s.slot == target), None)
                if holder is not None:  # another prompt is mid-prefill there: swap the two slots
                    slab.swap(target, holder.length, seq.slot, seq.length)
                    holder.slot = seq.slot
                else:
                    slab.move(seq.slot, target, seq.length)
                seq.slot = target
            self.rows.append(seq)
            for child in seq.children:  # n choices: the prompt's KV copied, not prefilled again
                self._join_child(seq, child)
            seq.children = []

    def _join_child(self, parent: Sequence, child: Sequence) -> None:
        slab = self.runner.slab
        target = len(self.rows)
        holder = next((s for s in self.prefilling if s.slot == target), None)
        if holder is not None:  # a prompt mid-prefill sits there: it moves to a free slot (admission kept n)
            free = self._free_top_slot()
            slab.move(target, free, holder.length)
            holder.slot = free
        slab.move(parent.slot, target, parent.length)
        child.slot = target
        self.rows.append(child)

    def _retire(self, seq: Sequence) -> None:
        index = self.rows.index(seq)
        result = self.runner.finish(seq, lambda text: self.emit(seq, text))
        last = self.rows.pop()
        if last is not seq:  # keep rows packed in the lowest slots
            self.runner.slab.move(last.slot, index, last.length)
            last.slot = index
            self.rows[index] = last
        self._release(seq)
        self.served += 1
        if seq.family is not None:  # one of n choices: the handle finishes with the last one
            result = seq.family.add(seq.index, result)
        if result is not None:
            seq.handle._finish(result, None)

    def _end(self, seq: Sequence, error: BaseException, *, keep_kv: bool) -> None:
        if seq.session is not None and not keep_kv:
            seq.session.kv = None
        self._release(seq)
        if seq.family is None or seq.family.claim_failure():
            seq.handle._finish(None, error)

    def _release(self, seq: Sequence) -> None:
        if seq.session is not None:
            self.sessions.release(seq.session)

    def _fail_all(self, error: BaseException) -> None:
        for seq in self.rows + self.prefilling:
            self._end(seq, error, keep_kv=False)
        self.rows.clear()
        self.prefilling.clear()
        self.runner.free_memory()

    def abort(self, error: BaseException) -> None:
        """Finish everything in flight with `error` (shutdown, a dead worker)."""
        self._fail_all(error)
