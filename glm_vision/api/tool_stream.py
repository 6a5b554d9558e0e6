"""One streamed choice's answer text as OpenAI deltas when the request has tools: plain text as
`content`, each call as `tool_calls` deltas (index, id and name first, then argument fragments that
concatenate to its arguments JSON); never a raw tag in `content`."""

from __future__ import annotations

from ..tool_calls import ArgumentsDelta, CallEnd, CallStart, ContentDelta, ToolCallStream
from .tools import ToolPlan


class ToolDeltas:
    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self.stream = ToolCallStream(plan.tools)
        self.calls = 0

    def feed(self, text: str) -> list[dict]:
        return self._deltas(self.stream.feed(text))

    def flush(self) -> list[dict]:
        return self._deltas(self.stream.flush())

    def finish_reason(self, finish: str) -> str:
        return "tool_calls" if self.calls and finish == "stop" else finish

    def _deltas(self, events) -> list[dict]:
        deltas = []
        for event in events:
            if isinstance(event, ContentDelta):
                deltas.append({"content": event.text})
            elif event.index > 0 and not self.plan.parallel:
                continue  # parallel_tool_calls false: only the first call
            elif isinstance(event, CallStart):
                deltas.append(
                    {
                        "tool_calls": [
                            {
                                "index": event.index,
                                "id": event.id,
                                "type": "function",
                                "function": {"name": event.name, "arguments": ""},
                            }
                        ]
                    }
                )
            elif isinstance(event, ArgumentsDelta):
                deltas.append({"tool_calls": [{"index": event.index, "function": {"arguments": event.fragment}}]})
            elif isinstance(event, CallEnd):
                self.calls += 1
        return deltas
