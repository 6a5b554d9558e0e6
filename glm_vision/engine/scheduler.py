"""Continuous batching: which sequences prefill and decode at each step (nano-vllm's `scheduler.py`).

Running sequences decode together, one token each per step, in slab slots 0..B-1; a new request
joins once its prompt is prefilled; finished or stopped sequences leave between steps.

Each step has a budget of prompt tokens (`prefill_chunk_tokens`), shared with the decode rows (one
token each) and the vision encoder (its layers counted as the prompt tokens of equal arithmetic),
so that a running stream never waits for a whole prompt or picture. Within it, prompts whose
pictures are encoded are prefilled oldest first, several in one pass, with the decode rows riding
along in the same pass (`ModelRunner.prefill`); what is left goes to one encoder call for the
pictures of all the requests waiting for it, up to `encoder_batch_patches` patches, spread over
steps layer by layer. Policy: `prefill-first` takes the whole budget every step, so that waiting
requests get their first token soonest; `decode-first` takes a quarter of it while others stream,
so that their tokens come more evenly. While nothing streams, a step takes a cold prompt whole
(`ModelRunner.solo_pass_tokens`), after its pictures' encoder layers: no one waits on that step.

Each step is pipelined: the tokens sampled last step are copied to the host while the GPU already
runs this step with them, so Python's bookkeeping overlaps the GPU work instead of idling it.
"""

from __future__ import annotations

import logging

import torch

from ..backend import EngineError, GpuOutOfMemoryError
from .choices import as_choice
from .host_copy import HostCopy
from .runner import ModelRunner
from .sequence import Sequence
from .vision import EncodeJob

log = logging.getLogger(__name__)

PREFILL_FIRST, DECODE_FIRST = "prefill-first", "decode-first"
# Pictures per encoder call, in patches: two 1920x1080 screenshots (10,764 patches each) or many small ones.
ENCODER_BATCH_PATCHES = 24576

OOM_MESSAGE = (
    "the GPU ran out of memory for this request; lower the image resolution budget, send fewer images or "
    "start a new chat. The server is still running."
)


def _engine_error(exc: BaseException) -> EngineError:
    return exc if isinstance(exc, EngineError) else EngineError(f"{type(exc).__name__}: {exc}")


class Scheduler:
    def __init__(
        self,
        runner: ModelRunner,
        sessions,
        *,
        max_batch: int,
        use_caches: bool,
        policy: str = PREFILL_FIRST,
        encoder_batch_patches: int = ENCODER_BATCH_PATCHES,
    ) -> None:
        if policy not in (PREFILL_FIRST, DECODE_FIRST):
            raise ValueError(f"policy must be {PREFILL_FIRST} or {DECODE_FIRST}, not {policy!r}")
        self.runner = runner
        self.policy = policy
        self.encoder_batch_patches = encoder_batch_patches
        self._encoding: tuple[EncodeJob, list[Sequence]] | None = None  # the encoder call in progress
        self._batches_done = 0  # encoder calls finished: a waiting request looks the cache up again after one
        self.sessions = sessions
        self.use_caches = use_caches
        self.max_batch = min(max_batch, runner.slab.slots)
        self.rows: list[Sequence] = []  # decoding; row i lives in slot i
        self.prefilling: list[Sequence] = []  # in slots taken from the top
        self._copy = HostCopy(runner.slab.slots, runner.device)
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
        except BaseException as exc:  # noqa: BLE001 - any failure belongs to this request (its handle), not the worker
            if session is not None:
                self.sessions.release(session)
            handle._finish(None, exc if isinstance(exc, EngineError) else EngineError(f"{type(exc).__name__}: {exc}"))
            return
        self.prefilling.append(seq)

    # ------------------------------------------------------------------ one step
    def step_budget(self, streaming: bool) -> int:
        """Tokens a step may take: decode rows, prompt chunks and encoder work of equal arithmetic.
        While nothing streams, no one waits on the step: a cold prompt takes one pass, after all of
        its pictures' encoder layers (which then do not count)."""
        budget = self.runner.prefill_chunk_tokens
        if not streaming:
            return self.runner.solo_pass_tokens
        if self.policy == DECODE_FIRST:
            budget = min(budget, max(256, budget // 4))
        return budget

    @torch.inference_mode()
    def step(self) -> None:
        rows = list(self.rows)
        sampled = tokens = None
        self.peak_batch = max(self.peak_batch, len(rows))
        self._look_up_new()
        if rows:
            # Same rows as last step: their pending tokens are exactly last step's sampled tensor. Their
            # copy is queued before any of this step's GPU work, so that reading them waits for the last
            # step alone: while this step runs, the host books them and launches the next one.
            tokens = self._sampled if rows == self._sampled_rows else torch.stack([s.pending for s in rows])
            self._copy.start(tokens)
        budget = self.step_budget(bool(rows))
        left = budget - len(rows)
        # the oldest request waiting for its first token is served first: its pictures or its prompt
        encoder_first = self._encoder_is_oldest()
        if encoder_first:
            spent = self._encode(left if rows else None, at_least_one=True)
            left = int(left - spent) if rows else left
        chunks = self._take_chunks(left, budget)
        left -= sum(len(chunk) for _, chunk in chunks)
        if rows or chunks:
            ok, sampled = self._forward(rows, tokens, chunks)
            if not ok:
                return
        if not encoder_first:
            self._encode(left, at_least_one=not chunks)
        if rows and sampled is not None:
            ids = self._copy.wait(len(rows))
            finished = []
            for index, (seq, token_id) in enumerate(zip(rows, ids, strict=False)):
                if self.runner.accept(seq, token_id, lambda text, seq=seq: self.emit(seq, text)):
                    self.runner.advance(seq, token_id, sampled[index])
                else:
                    finished.append(seq)
            for seq in finished:
                self._retire(seq)
            self._sampled_rows, self._sampled = (rows, sampled) if not finished else ([], None)
        self._join_prefilled()

    def _forward(self, rows: list[Sequence], tokens, chunks) -> tuple[bool, torch.Tensor | None]:
        """The step's pass: prompt chunks with the rows riding along, or the rows alone (a captured
        graph). (False when everything failed, the rows' sampled tokens or None)."""
        try:
            if chunks:
                logits = self.runner.prefill(chunks, rows, tokens)
            else:
                logits = self.runner.forward.decode(tokens, [s.next_position for s in rows], [s.length for s in rows])
            if not rows:
                return True, None
            # all rows; those that finish now drop theirs. Guided rows read the fed tokens first.
            return True, self.runner.sample(rows, logits, lambda: self._copy.wait(len(rows)))
        except torch.OutOfMemoryError as exc:
            if not chunks:
                log.error("out of GPU memory in a decode step of %d sequences: %s", len(rows), exc)
                self._fail_all(GpuOutOfMemoryError(OOM_MESSAGE))
                return False, None
            # the prompts fail; the rows only wrote this step's KV, which the next step writes again
            log.error("out of GPU memory prefilling %d prompt tokens: %s", sum(len(c) for _, c in chunks), exc)
            for seq, _ in chunks:
                self._fail_prefill(seq, GpuOutOfMemoryError(OOM_MESSAGE))
            self.runner.free_memory()
        except Exception as exc:  # noqa: BLE001 - bad prompts must not stop the others
            if not chunks:
                raise
            log.exception("prefill failed")
            for seq, _ in chunks:
                self._fail_prefill(seq, _engine_error(exc))
        return True, None

    def _look_up_new(self) -> None:
        """New requests: stopped ones leave; the others look their pictures up in the feature cache."""
        for seq in list(self.prefilling):
            if seq.handle.cancelled.is_set():  # stopped before its first token: no more GPU work for it
                self.prefilling.remove(seq)
                seq.finish_reason = "cancelled"
                result = self.runner.finish(seq, lambda text, seq=seq: self.emit(seq, text))
                self._release(seq)
                seq.handle._finish(result, None)  # no choice has started: no family yet
            elif seq.images is None:
                self.runner.lookup_images(seq)
                seq.images.checked = self._batches_done

    def _take_chunks(self, left: int, budget: int) -> list:
        """Prompt chunks for this step, oldest request first, `left` tokens in all. A prompt does not
        start on a scrap of a step (less than a quarter of the budget, unless it fits): it would split
        into an extra small pass, and its later chunks attend after a prefix (a slower kernel)."""
        chunks = []
        for seq in list(self.prefilling):
            if left <= 0:
                break
            if not seq.ready_for_text:
                continue
            if seq.embeds is None and left < min(len(seq.prompt) - seq.cursor, budget // 4):
                continue
            try:
                chunk = self.runner.prefill_chunk(seq, left)
            except torch.OutOfMemoryError as exc:
                log.error("out of GPU memory preparing a %d-token prompt: %s", len(seq.prompt), exc)
                self._fail_prefill(seq, GpuOutOfMemoryError(OOM_MESSAGE))
                self.runner.free_memory()
                continue
            except Exception as exc:  # noqa: BLE001 - one bad request must not stop the others
                log.exception("prefill failed")
                self._fail_prefill(seq, _engine_error(exc))
                continue
            chunks.append((seq, chunk))
            left -= len(chunk)
        return chunks

    # ------------------------------------------------------------------ the vision encoder
    def _encoder_is_oldest(self) -> bool:
        """Whether the oldest request still being prefilled waits for the vision encoder."""
        for seq in self.prefilling:
            if seq.ready_for_text:
                return False
            if seq.images is not None and seq.images.missing:
                return True
        return False

    def _encode(self, left: float | None, *, at_least_one: bool) -> float:
        """Spend up to `left` tokens' worth of the step (None: no limit) on the encoder call in progress
        (starting one if none is), whole layers only, at least one if `at_least_one`. Returns the
        tokens' worth spent."""
        if self._encoding is not None and not any(seq in self.prefilling for seq in self._encoding[1]):
            self._encoding = None  # everyone it was for has gone
        if self._encoding is None:
            self._encoding = self._start_encoding()
            if self._encoding is None:
                return 0.0
        job, seqs = self._encoding
        cost = self.runner.token_cost(job)
        blocks = job.blocks_left if left is None else min(job.blocks_left, int(max(left, 0) // cost))
        if blocks == 0 and not at_least_one:
            return 0.0
        blocks = max(blocks, 1)
        try:
            done = self.runner.encode_some(job, seqs, blocks)
        except torch.OutOfMemoryError as exc:
            log.error("out of GPU memory in the vision encoder (%d patches): %s", job.patches, exc)
            self._fail_encoding(seqs, GpuOutOfMemoryError(OOM_MESSAGE))
            return 0.0
        except Exception as exc:  # noqa: BLE001 - bad pictures must not stop the others
            log.exception("vision encoder failed")
            self._fail_encoding(seqs, _engine_error(exc))
            return 0.0
        if done:
            self._encoding = None
            self._batches_done += 1
        return blocks * cost

    def _start_encoding(self):
        """One encoder call for the requests waiting for one, oldest first, up to the batch's patches."""
        batch, patches = [], 0
        for seq in [s for s in self.prefilling if s.waiting_for_encoder]:
            if seq.images.checked < self._batches_done:  # encoded for another request of its scope since?
                seq.images.checked = self._batches_done
                if self.runner.lookup_images(seq):
                    continue
            size = sum(t * h * w for t, h, w in (img.grid_thw for img in seq.images.unique.values()))
            if batch and patches + size > self.encoder_batch_patches:
                break
            batch.append(seq)
            patches += size
        if not batch:
            return None
        try:
            return self.runner.encode_images(batch), batch
        except torch.OutOfMemoryError as exc:
            log.error("out of GPU memory preparing %d pictures: %s", len(batch), exc)
            self._fail_encoding(batch, GpuOutOfMemoryError(OOM_MESSAGE))
        except Exception as exc:  # noqa: BLE001 - bad pictures must not stop the others
            log.exception("image preprocessing failed")
            self._fail_encoding(batch, _engine_error(exc))
        return None

    def _fail_encoding(self, seqs: list[Sequence], error: EngineError) -> None:
        self._encoding = None
        for seq in seqs:
            if seq in self.prefilling:
                self._fail_prefill(seq, error)
        if isinstance(error, GpuOutOfMemoryError):
            self.runner.free_memory()

    def _fail_prefill(self, seq: Sequence, error: EngineError) -> None:
        self.prefilling.remove(seq)
        self._end(seq, error, keep_kv=False)

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
            done, result = result, seq.family.add(seq.index, result)
            if result is None and not seq.family.failed:
                seq.handle._choice_end(as_choice(seq.index, done))
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
        self._encoding = None
        self.runner.free_memory()

    def abort(self, error: BaseException) -> None:
        """Finish everything in flight with `error` (shutdown, a dead worker)."""
        self._fail_all(error)
