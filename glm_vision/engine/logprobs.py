"""Log probabilities of the sampled tokens and their top alternatives, in OpenAI's shape.

They are taken from the model's raw logits (`log_softmax` of what the forward pass returned), before
the constraint mask, repetition penalty, temperature, top-k and top-p: vLLM's default
(`raw_logprobs`). A step's values go to the host with one asynchronous copy, read when the token is.
"""

from __future__ import annotations

import torch

from ..backend import TokenLogprob, TopLogprob


class StepLogprobs:
    """One sampling step's chosen logprob and top-k (value, id) pairs for every row of the batch,
    packed in one float32 tensor (B, 1 + 2k) and copied to the host without waiting."""

    def __init__(self, logits: torch.Tensor, tokens: torch.Tensor, k: int) -> None:
        logprobs = logits.float().log_softmax(-1)
        chosen = logprobs.gather(-1, tokens[:, None])
        values, ids = logprobs.topk(k, dim=-1) if k else (chosen[:, :0], chosen[:, :0])
        packed = torch.cat([chosen, values, ids.float()], dim=-1)  # ids are exact in float32 below 2**24
        self.k = k
        self._event = None
        if packed.device.type == "cuda":
            self._host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
            self._host.copy_(packed, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = packed
        self._rows: list[list[float]] | None = None

    def row(self, index: int) -> tuple[float, list[tuple[float, int]]]:
        """(chosen logprob, [(logprob, id), ...] best first) of one row."""
        if self._rows is None:
            if self._event is not None:
                self._event.synchronize()
            self._rows = self._host.tolist()
        values = self._rows[index]
        k = self.k
        return values[0], [(values[1 + j], int(values[1 + k + j])) for j in range(k)]


class TokenTexts:
    """A token id's text and exact bytes, as OpenAI's logprobs report them (byte-level BPE tokens
    are mapped back to their bytes; a token that ends inside a character shows U+FFFD)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
        self.byte_of = {char: byte for byte, char in _bytes_to_unicode().items()}
        self._cache: dict[int, tuple[str, tuple[int, ...]]] = {}

    def __call__(self, token_id: int) -> tuple[str, tuple[int, ...]]:
        known = self._cache.get(token_id)
        if known is None:
            raw = self._bytes(token_id)
            known = self._cache[token_id] = (raw.decode("utf-8", errors="replace"), tuple(raw))
        return known

    def _bytes(self, token_id: int) -> bytes:
        if token_id in self.added:
            return self.added[token_id].encode()
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if piece is not None and all(char in self.byte_of for char in piece):
            return bytes(self.byte_of[char] for char in piece)
        return self.tokenizer.decode([token_id], skip_special_tokens=False).encode()


def token_logprob(texts: TokenTexts, token_id: int, step: StepLogprobs, row: int, top: int) -> TokenLogprob:
    chosen, best = step.row(row)
    token, raw = texts(token_id)
    alternatives = []
    for value, other in best[:top]:
        text, other_raw = texts(other)
        alternatives.append(TopLogprob(text, value, other_raw))
    return TokenLogprob(token, chosen, raw, tuple(alternatives))


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet (what byte-level BPE vocabularies are written in)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=False))
