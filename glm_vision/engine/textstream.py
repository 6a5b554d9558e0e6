"""Token ids -> text deltas that never split a multi-byte character, and stop-string handling."""

from __future__ import annotations

from transformers.tokenization_utils_tokenizers import TokenizersBackend

REPLACEMENT = "\ufffd"


def fast_decoder(tokenizer):
    """ids -> text exactly as `tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)`:
    straight through the Rust tokenizer when transformers' own decode would only wrap it (a third of the cost;
    every decode row calls this twice a token), else through transformers."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and type(tokenizer)._decode is TokenizersBackend._decode:
        return lambda ids: backend.decode(ids, skip_special_tokens=False)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


class IncrementalDetokenizer:
    """Decodes a growing list of ids; a delta is released only once its bytes form whole characters."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._decode = fast_decoder(tokenizer)
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        if full.endswith(REPLACEMENT) or len(full) <= len(prefix):
            return ""  # an incomplete UTF-8 sequence: wait for the next token
        # Decoding from the last released boundary keeps each call short and the text stable.
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return full[len(prefix) :]

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
