"""The grammar of one GLM function call, for `tool_choice` "required" or a named function: the call's
tags and name as written by the chat template, then each parameter of the tool's schema as an
`<arg_key>`/`<arg_value>` pair (required ones always, optional ones may be left out, in the schema's
order); a string value is raw text, any other value JSON that matches its schema."""

from __future__ import annotations

import json
import re

from ..tool_calls import CALL_CLOSE, CALL_OPEN, KEY_CLOSE, KEY_OPEN, VALUE_CLOSE, VALUE_OPEN

RAW_TEXT = r"([^<]|<[^/])*"  # a raw string value: anything but the start of its closing tag
JSON_SEPARATORS = (",", ":")


def ebnf_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def literal(xgr, text: str):
    return xgr.Grammar.from_ebnf(f"root ::= {ebnf_literal(text)}")


def value_grammar(xgr, schema: dict):
    if schema.get("type") == "string":
        return xgr.Grammar.from_regex(raw_string_regex(schema))
    return xgr.Grammar.from_json_schema(
        json.dumps(schema), any_whitespace=False, separators=JSON_SEPARATORS, strict_mode=True
    )


def raw_string_regex(schema: dict) -> str:
    """What a raw string value may be: one of its `enum` / its `const`, else its `pattern` (matched whole, which
    also satisfies JSON Schema's search semantics), else its length bounds, else any text before its closing tag.
    A length beside a pattern is refused before this (`backend.json_schema`)."""
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        return "|".join(f"({re.escape(str(v))})" for v in values)
    if "pattern" in schema:
        return _whole(schema["pattern"])
    if "minLength" in schema or "maxLength" in schema:
        high = schema.get("maxLength")
        return f"[^<]{{{int(schema.get('minLength', 0))},{'' if high is None else int(high)}}}"
    return RAW_TEXT


def _whole(pattern: str) -> str:
    """The pattern without its anchors (a regex grammar always matches the whole value)."""
    if pattern.startswith("^"):
        pattern = pattern[1:]
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1]
    return pattern


def argument_grammar(xgr, key: str, schema: dict, required: bool):
    pair = xgr.Grammar.concat(
        literal(xgr, f"{KEY_OPEN}{key}{KEY_CLOSE}\n{VALUE_OPEN}"),
        value_grammar(xgr, schema),
        literal(xgr, f"{VALUE_CLOSE}\n"),
    )
    return pair if required else xgr.Grammar.union(pair, xgr.Grammar.from_ebnf('root ::= ""'))


def call_grammar(xgr, function: dict):
    parameters = function.get("parameters") or {}
    required = set(parameters.get("required") or ())
    parts = [literal(xgr, f"{CALL_OPEN}{function['name']}\n")]
    for key, schema in (parameters.get("properties") or {}).items():
        parts.append(argument_grammar(xgr, key, schema, key in required))
    parts.append(literal(xgr, CALL_CLOSE))
    return xgr.Grammar.concat(*parts)


def tool_call_grammar(xgr, tools: list[dict]):
    """Exactly one call to one of `tools` (OpenAI function tools)."""
    calls = [call_grammar(xgr, tool["function"]) for tool in tools]
    return calls[0] if len(calls) == 1 else xgr.Grammar.union(*calls)
