"""The request's function tools: checked before any GPU work (each problem a 400 naming its field),
planned (rendered, enforced or left out), and the answer's calls read back into OpenAI's shape."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..backend import OutputConstraint
from ..backend.json_schema import schema_problem
from ..conversation import Message
from ..tool_calls import ToolCall, parse_tool_calls
from .errors import APIError

TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
CHOICES = ("auto", "none", "required")


def check_tools(tools: list | None) -> list[dict]:
    """OpenAI function tools, each with a usable name and a JSON Schema object for its parameters."""
    for index, tool in enumerate(tools or []):
        where = f"tools.{index}"
        if (
            not isinstance(tool, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(tool.get("function"), dict)
        ):
            raise APIError(400, f'{where}: each tool must be {{"type": "function", "function": {{...}}}}', param=where)
        function = tool["function"]
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise APIError(
                400,
                f"{where}.function.name: a tool needs a name of 1 to 64 letters, digits, '_', '-' or '.'",
                param=f"{where}.function.name",
            )
        check_parameters(function.get("parameters"), f"{where}.function.parameters")
    names = [tool["function"]["name"] for tool in tools or []]
    if len(set(names)) != len(names):
        raise APIError(400, "tools: two tools have the same name", param="tools")
    return list(tools or [])


def check_parameters(schema, where: str) -> None:
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise APIError(
            400,
            f'{where}: parameters must be a JSON Schema object, e.g. {{"type": "object", "properties": {{...}}}}',
            param=where,
            code="invalid_schema",
        )
    if schema.get("type", "object") != "object" or not isinstance(schema.get("properties", {}), dict):
        raise APIError(
            400,
            f"{where}: parameters must be a JSON Schema of type 'object' with 'properties' as a mapping",
            param=where,
            code="invalid_schema",
        )
    for key, spec in schema.get("properties", {}).items():
        if not isinstance(spec, dict):
            raise APIError(
                400,
                f"{where}.properties.{key}: each property must be a JSON Schema (an object)",
                param=f"{where}.properties.{key}",
                code="invalid_schema",
            )


def check_enforceable(tools: list[dict], choice: str | dict) -> None:
    """The parameters of the tools a 'required' or named tool_choice enforces: schemas constrained decoding can
    hold to (`json_schema.schema_problem`). With 'auto' they are only shown to the model."""
    for index, tool in enumerate(tools):
        function = tool["function"]
        enforced = choice == "required" or (isinstance(choice, dict) and choice["function"]["name"] == function["name"])
        if enforced and function.get("parameters") is not None:
            where = f"tools.{index}.function.parameters"
            problem = schema_problem(function["parameters"])
            if problem is not None:
                raise APIError(400, f"{where}: {problem}", param=where, code="invalid_schema")


def check_tool_choice(choice, tools: list[dict]) -> str | dict:
    """'auto', 'none', 'required' or {"type": "function", "function": {"name": NAME}} of a tool in `tools`."""
    if choice is None:
        return "auto" if tools else "none"
    if isinstance(choice, str):
        if choice not in CHOICES:
            raise APIError(
                400,
                f"tool_choice must be one of {', '.join(CHOICES)} or a named function, not {choice!r}",
                param="tool_choice",
            )
        if choice == "required" and not tools:
            raise APIError(400, "tool_choice 'required' needs tools", param="tool_choice")
        return choice
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(name, str):
        raise APIError(
            400, 'a named tool_choice is {"type": "function", "function": {"name": NAME}}', param="tool_choice"
        )
    if name not in {tool["function"]["name"] for tool in tools}:
        raise APIError(400, f"tool_choice names '{name}', which is not one of the request's tools", param="tool_choice")
    return {"type": "function", "function": {"name": name}}


def check_tool_results(messages: list[Message]) -> None:
    """Every tool result answers a call an earlier assistant turn made."""
    called: set[str] = set()
    for index, message in enumerate(messages):
        called.update(call.id for call in message.tool_calls)
        if message.role == "tool" and message.tool_call_id not in called:
            raise APIError(
                400,
                f"messages.{index}.tool_call_id: {message.tool_call_id!r} matches no tool call of an "
                "earlier assistant message",
                param=f"messages.{index}.tool_call_id",
            )


@dataclass(frozen=True)
class ToolPlan:
    """What the request's tools mean for this answer."""

    tools: list[dict]  # rendered into the prompt (none when tool_choice is "none")
    choice: str | dict
    parallel: bool  # false: only the first call of an answer is returned

    @property
    def active(self) -> bool:
        return bool(self.tools)

    def constraint(self) -> OutputConstraint | None:
        """'required' and a named function are enforced: exactly one call, with schema-valid arguments."""
        if self.choice == "required":
            return OutputConstraint("tool_call", json.dumps(self.tools))
        if isinstance(self.choice, dict):
            name = self.choice["function"]["name"]
            return OutputConstraint("tool_call", json.dumps([t for t in self.tools if t["function"]["name"] == name]))
        return None


def plan_tools(body) -> ToolPlan:
    tools = check_tools(body.tools)
    choice = check_tool_choice(body.tool_choice, tools)
    check_enforceable(tools, choice)
    return ToolPlan(
        tools=tools if choice != "none" else [], choice=choice, parallel=body.parallel_tool_calls is not False
    )


def answer_with_calls(answer: str, finish: str, plan: ToolPlan) -> tuple[dict, str]:
    """The message fields of an answer that may hold calls, and its finish reason ('tool_calls' when it
    called, 'length' when max_tokens cut a call off)."""
    if not plan.active:
        return {"content": answer}, finish
    parsed = parse_tool_calls(answer, plan.tools)
    calls = parsed.calls if plan.parallel else parsed.calls[:1]
    if not calls:
        return {"content": parsed.content}, "length" if parsed.cut_off else finish
    fields = {"content": parsed.content.strip() or None, "tool_calls": [call_body(call) for call in calls]}
    return fields, "tool_calls" if finish == "stop" else finish


def call_body(call: ToolCall) -> dict:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json}}
