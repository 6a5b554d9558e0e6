"""GPU work for requests: build the prompt, encode new images, prefill only the uncached suffix in
chunks, decode batches, hand the KV back to the session.

Runs on the worker thread only. Positions are explicit 3-D M-RoPE ids computed by the model's own
`get_rope_index`, so no shared `rope_deltas` state is read or written.
"""

from __future__ import annotations

import time

import torch

from ..backend import ContextOverflowError, GenerationRequest, GenerationResult, Usage
from .cache import FeatureCache, ImageFeatures, reusable_prefix
from .forward import Chunk, DecodeRows, TextForward
from .loader import LoadedModel
from .outputs import OutputControls
from .prompt import Prompt, PromptBuilder, PromptImage
from .sampling import BatchSampler, SamplerState
from .sequence import Sequence, SuffixImages
from .sessions import KVState, Session
from .slab import KVSlab, kv_geometry
from .textstream import IncrementalDetokenizer, StopStrings
from .transfer import picture_to_device, to_device
from .vision import EncodeJob, VisionEncoder

SOLO_PASS_TOKENS = 4096


def stop_token_ids(model, tokenizer) -> set[int]:
    ids = set()
    for source in (model.generation_config.eos_token_id, model.config.get_text_config().eos_token_id):
        if source is None:
            continue
        ids.update(source if isinstance(source, (list, tuple)) else [source])
    for token in ("<|endoftext|>", "<|user|>", "<|observation|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return ids


class ModelRunner:
    def __init__(
        self,
        loaded: LoadedModel,
        features: FeatureCache,
        *,
        max_context_tokens: int,
        default_max_image_tokens: int,
        prefill_chunk_tokens: int,  # Settings.prefill_chunk_tokens: the one default
        slots: int = 1,
        use_graphs: bool = False,
        compile_math: bool = False,
        decode_attention: str = "compiled",
        decode_matmul: str = "cublas",
        decode_pdl: str = "off",
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.processor = loaded.processor
        self.tokenizer = loaded.processor.tokenizer
        self.config = self.model.config
        self.device = torch.device(loaded.device)
        self.features = features
        self.max_context_tokens = max_context_tokens
        self.default_max_image_tokens = default_max_image_tokens
        self.builder = PromptBuilder(self.processor, self.config.image_token_id)
        self.vision = VisionEncoder(self.model, compile_math=compile_math, max_image_tokens=default_max_image_tokens)
        # a text chunk of T tokens costs ~2 x T x these FLOPs: the encoder's share of a step is sized by it
        self.text_weights = sum(p.numel() for p in self.model.model.language_model.layers.parameters())
        self.stop_ids = stop_token_ids(self.model, self.tokenizer)
        self.tag_ids = frozenset(self.tokenizer.added_tokens_decoder)  # GLM's markup: never part of a stop string
        text = self.config.get_text_config()
        geometry = kv_geometry(text)
        self.kv_bytes_per_token = KVSlab.bytes_per_token(**geometry, dtype=self.model.dtype)
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.slab = KVSlab(
            **geometry, slots=slots, max_len=max_context_tokens, device=self.device, dtype=self.model.dtype
        )
        self.forward = TextForward(
            self.model,
            self.slab,
            use_graphs=use_graphs,
            compile_math=compile_math,
            decode_attention=decode_attention,
            decode_matmul=decode_matmul,
            decode_pdl=decode_pdl,
            pass_tokens=prefill_chunk_tokens,
            solo_pass_tokens=max(prefill_chunk_tokens, SOLO_PASS_TOKENS),
        )
        # Two samplers, so that a prompt's first token does not evict the decode batch's cached layout.
        self.prefill_sampler = BatchSampler(self.device)
        self.decode_sampler = BatchSampler(self.device)
        self.outputs = OutputControls(self.tokenizer, self.vocab_size, self.stop_ids, self.device)
        self.prefill_tokens = 0  # prompt tokens run through the model (n choices prefill once)

    @property
    def solo_pass_tokens(self) -> int:
        """A step's prompt tokens while nothing decodes: no stream waits on the step, so a cold prompt of
        up to this many tokens is one pass (one read of the weights, one causal attention call). The
        passes keep it: on CUDA they plan cuDNN's first-chunk attention up to it."""
        return self.forward.passes.solo_pass_tokens

    @solo_pass_tokens.setter
    def solo_pass_tokens(self, tokens: int) -> None:
        self.forward.passes.solo_pass_tokens = tokens

    # ------------------------------------------------------------------ prompt
    def build_prompt(self, request: GenerationRequest) -> Prompt:
        prompt = self.builder.build(
            request.messages,
            enable_thinking=request.enable_thinking,
            max_image_tokens=self.image_budget(request),
            tools=request.tools,
        )
        if len(prompt) >= self.max_context_tokens:
            raise ContextOverflowError(
                f"the conversation is {len(prompt):,} tokens long; the context limit is {self.max_context_tokens:,} "
                "tokens (prompt and answer together). Remove images, lower the image resolution budget or start a new chat"
            )
        return prompt

    def image_budget(self, request: GenerationRequest) -> int:
        """Tokens per image: the request's budget, never above the server's --max-pixels."""
        return min(request.max_image_tokens or self.default_max_image_tokens, self.default_max_image_tokens)

    def positions(self, prompt: Prompt) -> torch.Tensor:
        """(3, 1, len) M-RoPE positions for the whole prompt, as the model itself computes them."""
        ids = torch.tensor([prompt.ids], dtype=torch.long)
        types = torch.tensor([prompt.mm_token_type_ids], dtype=torch.int)
        grids = torch.tensor([img.grid_thw for img in prompt.images], dtype=torch.long) if prompt.images else None
        position_ids, _ = self.model.model.get_rope_index(ids, types, image_grid_thw=grids)
        return position_ids

    # ------------------------------------------------------------------ vision
    def lookup_images(self, seq: Sequence) -> bool:
        """Take the suffix's image features from the cache: all of them the first time, those still
        missing later (another request of the scope may have encoded them since). True when none is
        missing, so the text prefill can start."""
        scope = self._scope(seq)
        if seq.images is None:
            seq.images = SuffixImages(missing=[img for img in seq.prompt.images if img.start >= seq.cursor])
        work = seq.images
        still = []
        for img in work.missing:
            cached = self.features.get(scope, img.key) if scope is not None else None
            if cached is not None and cached.grid_thw == img.grid_thw:
                work.found[img.start] = cached.embeds
                seq.usage.image_cache_hits += 1
            else:
                still.append(img)
        work.missing = still
        work.unique = {}
        for img in still:
            work.unique.setdefault(img.key, img)
        return not still

    def encode_images(self, seqs: list[Sequence]) -> EncodeJob:
        """Preprocess the missing pictures of `seqs` on the device and start one encoder call for all of
        them (run by `EncodeJob.advance`; each picture attends only to its own patches). A picture two of
        them need in one cache scope is encoded once."""
        index: dict[tuple, int] = {}
        pixels, grids = [], []
        for seq in seqs:
            scope = self._scope(seq)
            size = self.builder.size_for(self.image_budget(seq.request))
            seq.images.index = {}
            for key, img in seq.images.unique.items():
                ident = (scope, key) if scope is not None else (id(seq), key)
                if ident not in index:
                    index[ident] = len(grids)
                    picture, grid = self._preprocess(img, size)
                    pixels.append(picture)
                    grids.append(grid)
                seq.images.index[key] = index[ident]
        job = self.vision.start(torch.cat(pixels) if len(pixels) > 1 else pixels[0], grids)
        for seq in seqs:
            seq.images.job = job
        return job

    def _preprocess(self, img: PromptImage, size: dict[str, int]):
        """One picture's patches on the device and its grid (checked against the prompt's)."""
        # the picture goes to the device from pinned memory: the processor's own copy would wait for the GPU
        pixels = picture_to_device(img.image.rgb_array(), self.device)
        inputs = self.builder.image_processor(
            images=[pixels], size=size, return_tensors="pt", device=self.device, input_data_format="channels_first"
        )
        grid = tuple(inputs["image_grid_thw"].tolist()[0])  # built on the host: no sync
        if grid != img.grid_thw:
            raise RuntimeError(f"image grid {list(grid)} differs from the predicted {list(img.grid_thw)}")
        return inputs["pixel_values"], grid  # already on the device

    def encode_some(self, job: EncodeJob, seqs: list[Sequence], blocks: int | None = None) -> bool:
        """Run the next `blocks` layers of a batch's encoder call (all that are left with None); once
        done, each sequence's features go to the cache and its prompt. True when done."""
        job.advance(blocks)
        if not job.done:
            return False
        for seq in seqs:
            scope, work = self._scope(seq), seq.images
            encoded = {key: job.features[i] for key, i in work.index.items()}
            seq.usage.images_encoded += len(encoded)
            for key, embeds in encoded.items():
                if scope is not None:
                    self.features.put(scope, key, ImageFeatures(embeds=embeds, grid_thw=work.unique[key].grid_thw))
            for img in work.missing:
                work.found[img.start] = encoded[img.key]
            work.missing = []
        return True

    def token_cost(self, job: EncodeJob) -> float:
        """One encoder layer of `job` in prompt tokens of equal arithmetic."""
        return job.block_flops / (2 * self.text_weights)

    @staticmethod
    def _scope(seq: Sequence) -> str | None:
        return (seq.request.cache_scope or seq.session.id) if seq.session is not None else None

    # ------------------------------------------------------------------ a request's life
    def start(self, handle, session: Session | None, slot: int, shared=None) -> Sequence:
        """Admit a request into `slot`: prompt built and checked, reusable KV loaded (the session's own,
        or the longer prefix `shared(session, keys)` finds in another session of its scope). No model
        work yet."""
        request = handle.request
        prompt = self.build_prompt(request)
        usage = Usage(prompt_tokens=len(prompt), images=len(prompt.images))
        kv = session.kv if session is not None else None
        reuse = reusable_prefix(kv.keys, prompt.keys) if kv is not None else 0
        if session is not None and shared is not None:
            other, length = shared(session, prompt.keys)
            if length > reuse:
                kv, reuse = other, length
        if session is not None:
            session.kv = None  # given back at the end; a failure mid-way must not leave a half-updated cache
        if reuse:
            self.slab.load(slot, kv.saved, reuse)
        usage.cached_tokens = reuse
        seq = Sequence(
            handle=handle,
            request=request,
            session=session,
            prompt=prompt,
            slot=slot,
            sampler=SamplerState(request.sampling, self.vocab_size, self.device, prompt.ids, self.stop_ids),
            detok=IncrementalDetokenizer(self.tokenizer),
            stops=StopStrings(request.sampling.stop),
            max_new=min(request.sampling.max_new_tokens, self.max_context_tokens - len(prompt)),
            keys=list(prompt.keys[:reuse]),
            usage=usage,
            cursor=reuse,
        )
        self.outputs.prepare(seq)
        return seq

    def _suffix_inputs(self, seq: Sequence) -> None:
        """Embeddings of the uncached suffix, image features scattered in, and the prompt's positions."""
        prompt, start = seq.prompt, seq.cursor
        embeds = self.forward.embed_tokens(to_device(prompt.ids[start:], torch.long, self.device))
        for img in prompt.images:
            if img.start >= start:
                embeds[img.start - start : img.end - start] = seq.images.found[img.start].to(embeds.dtype)
        seq.embeds = embeds
        positions = self.positions(prompt)[:, 0, :]
        seq.next_position = int(positions.max()) + 1
        seq.positions = to_device(positions, None, self.device)

    def prefill_chunk(self, seq: Sequence, limit: int) -> Chunk:
        """The next chunk (at most `limit` tokens) of a sequence whose images are all encoded, taken
        for this step: its keys count as written from here on."""
        if seq.embeds is None:
            self._suffix_inputs(seq)
        base = len(seq.prompt) - seq.embeds.shape[0]
        start = seq.cursor
        end = min(len(seq.prompt), start + limit)
        self.prefill_tokens += end - start
        seq.keys.extend(seq.prompt.keys[start:end])
        seq.cursor = end
        return Chunk(
            slot=seq.slot,
            start=start,
            embeds=seq.embeds[start - base : end - base],
            positions=seq.positions[:, start:end],
            last=seq.prefilled,
        )

    def prefill(
        self, chunks: list[tuple[Sequence, Chunk]], rows: list[Sequence] = (), tokens: torch.Tensor | None = None
    ):
        """One pass over prompt chunks and, riding along, the decode `rows` (their `tokens`); the
        sequences whose prompt ended have their first token sampled (`pending`). The rows' logits or None."""
        decode = DecodeRows(tokens, [s.next_position for s in rows], [s.length for s in rows]) if rows else None
        ends, row_logits = self.forward.prefill([chunk for _, chunk in chunks], decode)
        done = [seq for seq, chunk in chunks if chunk.last]
        for seq, logits in zip(done, ends if done else (), strict=False):
            self._first_token(seq, logits)
        return row_logits

    def _first_token(self, seq: Sequence, logits: torch.Tensor) -> None:
        """A prompt is done: sample its first token (and that of each of its n choices, which copy its KV)."""
        seq.embeds = None
        if seq.request.capture_logits:
            seq.first_logits = logits.float().cpu()
        family = [seq, *self.outputs.fork(seq, self)]  # n choices share this prefill
        seq.children = family[1:]
        batch = logits[None].expand(len(family), -1)
        tokens = self.prefill_sampler(batch, [s.sampler for s in family], self.outputs.prefill_mask(family))
        for row, (member, noted) in enumerate(
            zip(family, self.outputs.note_logprobs(family, batch, tokens), strict=False)
        ):
            member.pending, member.pending_logprobs = tokens[row], noted

    def accept(self, seq: Sequence, token_id: int, emit) -> bool:
        """Take one generated token (read on the host); False when the sequence has finished."""
        if seq.first_token_at is None:
            seq.first_token_at = time.perf_counter()
            seq.usage.ttft_s = seq.first_token_at - seq.started
            if seq.images is not None:
                if seq.images.job is not None:  # its token was read: the GPU is past the encoder's events
                    seq.usage.encode_s += seq.images.job.seconds()
                seq.images = None
        if token_id in self.stop_ids:
            seq.finish_reason = "stop"
            return False
        seq.generated.append(token_id)
        self.outputs.take_token(seq, token_id)
        text = seq.detok.push(token_id)
        delta = seq.stops.tag(text) if token_id in self.tag_ids else seq.stops.feed(text)
        if delta:
            seq.text_parts.append(delta)
            emit(delta)
        if seq.stops.stopped:
            seq.finish_reason = "stop"
        elif seq.handle.cancelled.is_set():
            seq.finish_reason = "cancelled"
        elif len(seq.generated) >= seq.max_new:
            seq.finish_reason = "length"
        return seq.finish_reason is None

    def sample(self, seqs: list[Sequence], logits: torch.Tensor, pending_ids=None) -> torch.Tensor:
        """The next token of every row of a decode step, (B,) on the device, in one batched call.
        `pending_ids()` reads the tokens fed this step on the host (only guided rows need them)."""
        mask = self.outputs.decode_mask(seqs, pending_ids) if pending_ids is not None else None
        tokens = self.decode_sampler(logits, [seq.sampler for seq in seqs], mask)
        for seq, noted in zip(seqs, self.outputs.note_logprobs(seqs, logits, tokens), strict=False):
            seq.sampled_logprobs = noted
        return tokens

    def advance(self, seq: Sequence, token_id: int, next_token: torch.Tensor) -> None:
        """The token's KV was written by the step just run: record it; `next_token` was sampled after it."""
        seq.keys.append(token_id)
        seq.next_position += 1
        seq.pending = next_token
        seq.pending_logprobs = seq.sampled_logprobs

    def finish(self, seq: Sequence, emit) -> GenerationResult:
        """Flush held-back text, give the KV back to the session, build the result."""
        if not seq.stops.stopped:
            tail = seq.stops.feed(seq.detok.flush())
            if not seq.stops.stopped:
                tail += seq.stops.flush()
            if tail:
                seq.text_parts.append(tail)
                emit(tail)
        if seq.unreleased:  # tokens whose text was held back or cut by a stop string: their logprobs still go out
            emit("")
        usage = seq.usage
        usage.completion_tokens = len(seq.generated)
        if seq.first_token_at is not None:
            usage.decode_s = time.perf_counter() - seq.first_token_at
        if seq.session is not None and seq.length:
            saved = self.slab.save(seq.slot, seq.length)
            seq.session.kv = KVState(saved=saved, keys=list(seq.keys), bytes_per_token=self.kv_bytes_per_token)
        return GenerationResult(
            text="".join(seq.text_parts),
            finish_reason=seq.finish_reason or "length",
            usage=usage,
            token_ids=tuple(seq.generated),
            first_logits=seq.first_logits,
            logprobs=tuple(seq.logprobs) if seq.logprobs is not None else None,
        )

    def free_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
