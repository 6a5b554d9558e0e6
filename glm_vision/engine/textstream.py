"""Token ids -> text deltas that never split a multi-byte character, and stop-string handling."""

from __future__ import annotations

from tokenizers.decoders import DecodeStream
from transformers.tokenization_utils_tokenizers import TokenizersBackend

REPLACEMENT = "\ufffd"


def rust_tokenizer(tokenizer):
    """The Rust tokenizer under `tokenizer` when transformers' decode would only wrap it, else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and type(tokenizer)._decode is TokenizersBackend._decode:
        return backend
    return None


def fast_decoder(tokenizer):
    """ids -> text exactly as `tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)`:
    straight through the Rust tokenizer where it can (a third of the cost), else through transformers."""
    backend = rust_tokenizer(tokenizer)
    if backend is not None:
        return lambda ids: backend.decode(ids, skip_special_tokens=False)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


class IncrementalDetokenizer:
    """Decodes a growing list of ids; a delta is released only once its bytes form whole characters.

    Every decode row pushes a token a step, so where the tokenizer is a plain Rust one the Rust tokenizer's own
    incremental decoder (`DecodeStream`, the same algorithm: one call a token instead of two decodes) does it;
    the offsets below follow its releases, for `flush` and for the Python path it falls back to."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._decode = fast_decoder(tokenizer)
        self._rust = rust_tokenizer(tokenizer)
        self._stream = DecodeStream(skip_special_tokens=False) if self._rust is not None else None
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        if self._stream is not None:
            try:
                delta = self._stream.step(self._rust, token_id)
            except Exception:  # noqa: BLE001 - the binding raises a bare Exception (InvalidPrefix)
                self._stream = None  # its decoded prefix changed under it: the Python path from here on
            else:
                return self._released(delta) if delta is not None else ""
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        if full.endswith(REPLACEMENT) or len(full) <= len(prefix):
            return ""  # an incomplete UTF-8 sequence: wait for the next token
        # Decoding from the last released boundary keeps each call short and the text stable.
        return self._released(full[len(prefix) :])

    def _released(self, delta: str) -> str:
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return delta

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        self.read_offset = len(self.ids)
        return full[len(prefix) :]


class StopStrings:
    """Holds back text that could be the start of a stop string; reports when one is complete. Stop strings
    are looked for in the text between GLM's tags (`<think>`, `<tool_call>`, box markers: `tag`), never inside
    or across one: a stop string "i" must not cut `<think>` into a stray `<th`. A whole tag can be a stop string."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.held = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        if not self.stops:
            return delta
        text = self.held + delta
        cut = min((i for i in (text.find(s) for s in self.stops) if i != -1), default=-1)
        if cut != -1:
            self.held = ""
            self.stopped = True
            return text[:cut]
        keep = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    keep = max(keep, size)
                    break
        self.held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def tag(self, text: str) -> str:
        """A tag token's text: released at once with whatever was held back before it, unless the tag is itself
        a stop string (`stop=["</think>"]`), which ends the text before it."""
        if text in self.stops:
            self.stopped = True
            return self.flush()
        return self.flush() + text

    def flush(self) -> str:
        text, self.held = self.held, ""
        return text
