"""What goes into a backend: a conversation and how to sample its answer."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..conversation import Message
from .errors import EngineError

# GLM-4.6V-Flash's sampling defaults.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.6
DEFAULT_TOP_K = 2
DEFAULT_REPETITION_PENALTY = 1.1
SEED_RANGE = (-(2**63), 2**63 - 1)  # what OpenAI's API and torch generators take
MAX_TOP_LOGPROBS = 20  # OpenAI's limit
MAX_CHOICES = 8  # most choices (`n`) one request may ask for


@dataclass(frozen=True)
class OutputConstraint:
    """What the answer must match, enforced token by token (constrained decoding), never by retrying.

    kind: "json_object" (any JSON object), "json_schema" (`spec` is the schema as JSON text), "regex",
    "grammar" (an EBNF grammar in xgrammar's / GBNF's notation), "choice" (`choices`: exactly one of them)
    or "tool_call" (`spec`: the OpenAI tools, as JSON text, of which exactly one must be called).
    With thinking on, the reasoning stays free and the constraint starts after `</think>`."""

    kind: str
    spec: str = ""
    choices: tuple[str, ...] = ()
    name: str = ""  # the schema's name (json_schema), for messages only

    KINDS = ("json_object", "json_schema", "regex", "grammar", "choice", "tool_call")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise EngineError(
                f"unknown constraint kind {self.kind!r}; use one of {', '.join(self.KINDS)}", param="response_format"
            )
        if self.kind == "choice" and (not self.choices or not all(isinstance(c, str) and c for c in self.choices)):
            raise EngineError(
                "a choice constraint needs a non-empty list of non-empty strings", param="structured_outputs.choice"
            )
        if self.kind in ("json_schema", "regex", "grammar", "tool_call") and not self.spec:
            raise EngineError(f"the {self.kind} constraint is empty", param="response_format")


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = DEFAULT_TEMPERATURE  # 0 means greedy
    top_p: float = DEFAULT_TOP_P
    top_k: int = DEFAULT_TOP_K  # 0 means no top-k
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    max_new_tokens: int = 1024
    min_new_tokens: int = 0  # stop tokens are suppressed until this many were written (benchmarks)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Log probabilities of the chosen token (and of the `top_logprobs` most likely ones) at each step,
    # taken from the model's raw logits: before the constraint mask, penalty, temperature, top-k, top-p.
    logprobs: bool = False
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        """Refuse out-of-range values; messages and `param` use the API's names (max_tokens, min_tokens)."""
        problems = [(param, text) for param, ok, text in self._rules() if not ok]
        if problems:
            raise EngineError("; ".join(text for _, text in problems), param=problems[0][0])

    def _rules(self) -> list[tuple[str, bool, str]]:
        return [
            ("temperature", 0 <= self.temperature <= 2, f"temperature must be between 0 and 2, got {self.temperature}"),
            ("top_p", 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            ("top_k", self.top_k >= 0, f"top_k must be 0 or -1 (off) or positive, got {self.top_k}"),
            (
                "repetition_penalty",
                0 < self.repetition_penalty <= 10,
                f"repetition_penalty must be in (0, 10], got {self.repetition_penalty}",
            ),
            ("max_tokens", self.max_new_tokens >= 1, f"max_tokens must be at least 1, got {self.max_new_tokens}"),
            (
                "min_tokens",
                0 <= self.min_new_tokens <= self.max_new_tokens,
                f"min_tokens must be between 0 and max_tokens ({self.max_new_tokens}), got {self.min_new_tokens}",
            ),
            (
                "seed",
                self.seed is None or SEED_RANGE[0] <= self.seed <= SEED_RANGE[1],
                f"seed must be a 64-bit integer ({SEED_RANGE[0]} to {SEED_RANGE[1]}), got {self.seed}",
            ),
            ("stop", len(self.stop) <= 4, f"stop takes at most 4 strings, got {len(self.stop)}"),
            ("stop", all(self.stop), "a stop string must not be empty (an empty one would end every answer at once)"),
            (
                "top_logprobs",
                0 <= self.top_logprobs <= MAX_TOP_LOGPROBS,
                f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {self.top_logprobs}",
            ),
            ("top_logprobs", self.logprobs or not self.top_logprobs, "top_logprobs needs logprobs: true"),
        ]

    @classmethod
    def greedy(cls, max_new_tokens: int = 256, **kwargs) -> SamplingParams:
        return cls(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, max_new_tokens=max_new_tokens, **kwargs)


@dataclass
class GenerationRequest:
    messages: list[Message]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    session_id: str | None = None  # the KV prefix cache lives per session; None: nothing cached
    # Image features are cached per scope: by default the session's own; a tenant (an API key, a
    # browser tab's successive chats) may share one scope over several sessions. Never across tenants.
    cache_scope: str | None = None
    enable_thinking: bool = True
    max_image_tokens: int | None = None  # per-image budget; None: the server's --max-pixels
    capture_logits: bool = False  # return the first step's logits (equivalence tests, benchmarks)
    tools: list[dict] = field(default_factory=list)  # OpenAI function tools, rendered by the chat template
    tool_choice: str | dict = "auto"  # "auto" | "none" | "required" | {"type": "function", "function": {"name": ...}}
    constraint: OutputConstraint | None = None  # what the answer must match (JSON schema, regex, ...)
    n: int = 1  # choices: the prompt is prefilled once, choice i samples with seed + i
    thinking_budget: int | None = None  # most reasoning tokens; then `</think>` is emitted and the answer follows

    def check(self, max_images_per_message: int) -> None:
        """Refuse what no backend can serve, before it is queued."""
        if not self.messages:
            raise EngineError("the conversation is empty; send at least one user message")
        last = len(self.messages) - 1
        if self.messages[last].role not in ("user", "tool"):
            raise EngineError(
                f"messages.{last}: the last message must come from the user (or be a tool's result); "
                f"this one's role is {self.messages[last].role!r}",
                param=f"messages.{last}.role",
            )
        for message in self.messages:
            if len(message.images) > max_images_per_message:
                raise EngineError(
                    f"a message has {len(message.images)} images; at most {max_images_per_message} images "
                    "per message are accepted"
                )
        if self.max_image_tokens is not None and self.max_image_tokens < 4:
            raise EngineError("the image budget must be at least 4 tokens per image")
        if not 1 <= self.n <= MAX_CHOICES:
            raise EngineError(f"n must be between 1 and {MAX_CHOICES}, got {self.n}", param="n")
        if self.thinking_budget is not None and self.thinking_budget < 0:
            raise EngineError(
                f"thinking_budget must be 0 or more tokens, got {self.thinking_budget}", param="thinking_budget"
            )
