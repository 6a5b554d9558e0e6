"""GLM's native function calls in model output: the one parser for complete and streamed text.

The GLM-4.5 / 4.6 family writes each call as

    <tool_call>NAME
    <arg_key>KEY</arg_key>
    <arg_value>VALUE</arg_value>
    ...
    </tool_call>

(string values raw, other values as JSON) and then ends its turn with `<|observation|>`. A value is
typed by the tool's parameter schema when one is known: a `string` parameter keeps its raw text,
anything else is read as JSON (falling back to the raw text when it is not JSON).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
KEY_OPEN, KEY_CLOSE = "<arg_key>", "</arg_key>"
VALUE_OPEN, VALUE_CLOSE = "<arg_value>", "</arg_value>"
TOOL_TAGS = (CALL_OPEN, CALL_CLOSE, KEY_OPEN, KEY_CLOSE, VALUE_OPEN, VALUE_CLOSE)

_ARGUMENT = re.compile(
    re.escape(KEY_OPEN)
    + r"(.*?)"
    + re.escape(KEY_CLOSE)
    + r"\s*"
    + re.escape(VALUE_OPEN)
    + r"(.*?)"
    + re.escape(VALUE_CLOSE),
    re.S,
)


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict
    id: str = field(default_factory=new_call_id)

    @property
    def arguments_json(self) -> str:
        """OpenAI's `arguments`: a JSON object as a string."""
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True)
class ParsedCalls:
    content: str  # the text outside the calls
    calls: tuple[ToolCall, ...]
    cut_off: bool  # a call was still open when the text ended (max_tokens): it is not in `calls`


def call_text(name: str, arguments: dict) -> str:
    """A call written as GLM writes it (what an upstream's structured call is turned back into)."""
    pairs = "".join(
        f"{KEY_OPEN}{key}{KEY_CLOSE}\n{VALUE_OPEN}"
        f"{value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}{VALUE_CLOSE}\n"
        for key, value in arguments.items()
    )
    return f"{CALL_OPEN}{name}\n{pairs}{CALL_CLOSE}"


def parameter_types(tools: list[dict] | None) -> dict[str, dict[str, str]]:
    """{function name: {parameter: JSON Schema type}} from OpenAI `tools`."""
    types: dict[str, dict[str, str]] = {}
    for tool in tools or []:
        function = tool.get("function") or {}
        properties = (function.get("parameters") or {}).get("properties") or {}
        types[function.get("name", "")] = {
            key: spec.get("type", "") for key, spec in properties.items() if isinstance(spec, dict)
        }
    return types


def typed_value(raw: str, schema_type: str | list | None):
    """A parameter's value: raw text for `string` parameters, else JSON (raw text when not JSON)."""
    if schema_type == "string" or (isinstance(schema_type, list) and schema_type == ["string"]):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_call_body(body: str, types: dict[str, dict[str, str]]) -> ToolCall:
    """The text between `<tool_call>` and `</tool_call>`: the name, then the arguments."""
    name, _, rest = body.partition("\n")
    name = name.strip()
    if KEY_OPEN in name:  # no newline before the first argument
        name, _, tail = name.partition(KEY_OPEN)
        name, rest = name.strip(), KEY_OPEN + tail + "\n" + rest
    schema = types.get(name, {})
    arguments = {
        key.strip(): typed_value(value.strip("\n"), schema.get(key.strip())) for key, value in _ARGUMENT.findall(rest)
    }
    return ToolCall(name=name, arguments=arguments)


def parse_tool_calls(text: str, tools: list[dict] | None = None) -> ParsedCalls:
    """Split a complete answer into its text and its calls (equal to what `ToolCallStream` yields)."""
    stream = ToolCallStream(tools)
    events = list(stream.feed(text)) + list(stream.flush())
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    calls = tuple(e.call for e in events if isinstance(e, CallEnd))
    return ParsedCalls(content=content, calls=calls, cut_off=stream.cut_off)


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class CallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    index: int
    fragment: str  # the fragments of one call concatenate to its `arguments_json`


@dataclass(frozen=True)
class CallEnd:
    index: int
    call: ToolCall


ToolEvent = ContentDelta | CallStart | ArgumentsDelta | CallEnd


class ToolCallStream:
    """Incremental parser: feed answer text as it arrives, get content and call events.

    Tags split over several deltas are held back until complete; a call's name is announced once its
    line is complete, each argument once its value is closed, so a client sees the call grow."""

    def __init__(self, tools: list[dict] | None = None) -> None:
        self.types = parameter_types(tools)
        self._pending = ""
        self._call: _OpenCall | None = None
        self._count = 0
        self.cut_off = False

    @property
    def calls_seen(self) -> int:
        return self._count

    def feed(self, text: str) -> Iterator[ToolEvent]:
        self._pending += text
        while True:
            progressed = yield from (self._in_call() if self._call is not None else self._outside())
            if not progressed:
                return

    def flush(self) -> Iterator[ToolEvent]:
        """The end of the answer: held-back text is content; a call still open was cut off."""
        if self._call is not None:
            self.cut_off = True
            self._call = None
        elif self._pending:
            yield ContentDelta(self._pending)
        self._pending = ""

    # ------------------------------------------------------------------ states
    def _outside(self) -> Iterator[ToolEvent]:
        index = self._pending.find(CALL_OPEN)
        if index == -1:
            keep = _partial_suffix(self._pending, CALL_OPEN)
            text, self._pending = self._pending[: len(self._pending) - keep], self._pending[len(self._pending) - keep :]
            if text:
                yield ContentDelta(text)
            return False
        if index:
            yield ContentDelta(self._pending[:index])
        self._pending = self._pending[index + len(CALL_OPEN) :]
        self._call = _OpenCall(self._count)
        self._count += 1
        return True

    def _in_call(self) -> Iterator[ToolEvent]:
        call = self._call
        if call.name is None:
            return (yield from self._read_name(call))
        close = self._pending.find(CALL_CLOSE)
        value_end = self._pending.find(VALUE_CLOSE)
        if value_end != -1 and (close == -1 or value_end < close):
            return (yield from self._read_argument(call, value_end))
        if close == -1:
            return False
        self._pending = self._pending[close + len(CALL_CLOSE) :].removeprefix("\n")
        yield ArgumentsDelta(call.index, "{}" if not call.arguments else "}")
        yield CallEnd(call.index, ToolCall(call.name, dict(call.arguments), call.id))
        self._call = None
        return True

    def _read_name(self, call: _OpenCall) -> Iterator[ToolEvent]:
        ends = [
            i
            for i in (self._pending.find("\n"), self._pending.find(KEY_OPEN), self._pending.find(CALL_CLOSE))
            if i != -1
        ]
        if not ends:
            return False
        end = min(ends)
        call.name = self._pending[:end].strip()
        self._pending = self._pending[end:].removeprefix("\n")
        yield CallStart(call.index, call.id, call.name)
        return True

    def _read_argument(self, call: _OpenCall, value_end: int) -> Iterator[ToolEvent]:
        found = _ARGUMENT.search(self._pending[: value_end + len(VALUE_CLOSE)])
        self._pending = self._pending[value_end + len(VALUE_CLOSE) :]
        if found is None:  # a value without its key: nothing to report
            return True
        key = found.group(1).strip()
        if key in call.arguments:  # a repeated key: the first value stands
            return True
        value = typed_value(found.group(2).strip("\n"), self.types.get(call.name, {}).get(key))
        pair = json.dumps({key: value}, ensure_ascii=False)[1:-1]
        yield ArgumentsDelta(call.index, ("{" if not call.arguments else ", ") + pair)
        call.arguments[key] = value
        return True


@dataclass
class _OpenCall:
    index: int
    id: str = field(default_factory=new_call_id)
    name: str | None = None
    arguments: dict = field(default_factory=dict)


def _partial_suffix(text: str, marker: str) -> int:
    """How many trailing characters of `text` could be the start of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0
