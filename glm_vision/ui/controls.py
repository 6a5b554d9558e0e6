"""The chat's settings (system prompt, thinking, sampling, image budget) as ONE value, `Controls`, and the
range of each: the sliders are built from these ranges and saved or imported values are checked
against the same ones."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..backend import DEFAULT_REPETITION_PENALTY, DEFAULT_TEMPERATURE, DEFAULT_TOP_K, DEFAULT_TOP_P, SamplingParams


@dataclass(frozen=True)
class Controls:
    system_prompt: str = ""
    thinking: bool = True
    thinking_budget: int = 0  # most reasoning tokens before the answer is forced; 0: no limit
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = DEFAULT_TOP_K
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    max_new_tokens: int = 1024
    image_tokens: int = 6144
    show_boxes: bool = True  # an answer's boxes and points drawn on its picture in the chat

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=float(self.temperature),
            top_p=float(self.top_p),
            top_k=int(self.top_k),
            repetition_penalty=float(self.repetition_penalty),
            max_new_tokens=int(self.max_new_tokens),
        )

    def as_dict(self) -> dict:
        return asdict(self)


NAMES = tuple(f.name for f in fields(Controls))  # the order of the components in the settings panel


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    step: float


def ranges(settings) -> dict[str, Range]:
    """Each numeric control's slider range (the image budget's top is the server's --max-pixels)."""
    return {
        "thinking_budget": Range(0, 8192, 1),
        "temperature": Range(0.0, 2.0, 0.05),
        "top_p": Range(0.01, 1.0, 0.01),
        "top_k": Range(0, 100, 1),
        "repetition_penalty": Range(1.0, 2.0, 0.01),
        "max_new_tokens": Range(1, max(settings.max_new_tokens, 8192), 1),
        "image_tokens": Range(min(64, settings.max_image_tokens), settings.max_image_tokens, 1),
    }


def default_controls(settings) -> Controls:
    return Controls(
        thinking=settings.thinking, max_new_tokens=settings.max_new_tokens, image_tokens=settings.max_image_tokens
    )


def checked(saved: dict, defaults: Controls, settings) -> Controls:
    """Saved or imported settings, each checked against its type and range (a bad value falls back to
    the default)."""
    limits = ranges(settings)
    values = {}
    for name in NAMES:
        default, value = getattr(defaults, name), saved.get(name)
        if isinstance(default, (str, bool)):
            values[name] = value if type(value) is type(default) else default
        elif (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and limits[name].low <= value <= limits[name].high
        ):
            values[name] = type(default)(value)
        else:
            values[name] = default
    return replace(defaults, **values)


def read(values: dict, panel: dict) -> Controls:
    """The Controls from a Gradio event's inputs given as a dict (`panel` maps each name to its component)."""
    return Controls(**{name: values[panel[name]] for name in NAMES})
