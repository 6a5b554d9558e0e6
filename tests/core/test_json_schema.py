"""backend/json_schema.py: which JSON schemas can constrain an answer, checked before any GPU work. xgrammar
itself lets a reference to another document match any JSON (a warning in its log, nothing in the answer), so
such a schema must be refused, not silently loosened; and a deep schema must be refused in words, not by a
RecursionError's text."""

import json

import pytest

from glm_vision.backend.json_schema import MAX_DEPTH, schema_problem


def nested(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"n": {"type": "integer"}}},
        {
            "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
            "$ref": "#/$defs/node",
        },
        {"$ref": "#"},
        {"type": "object", "properties": {"$ref": {"type": "string"}}},  # a property that happens to be named $ref
        {"type": "object", "properties": {"not": {"type": "string"}, "if": {"type": "integer"}}},  # and not / if
        {"type": "object", "properties": {"x": {"$ref": "#/$defs/x", "description": "an annotation"}}, "$defs": {}},
        {"allOf": [{"$ref": "#/$defs/x"}], "$defs": {"x": {"type": "integer"}}},  # pydantic's single allOf
        {"type": "string", "format": "date-time"},  # enforced
        {"type": "string", "format": "password"},  # an annotation
        {"type": "string", "pattern": "^[a-z]{3,8}$"},  # a length inside the pattern
        {"type": "array", "items": {"type": "integer"}, "uniqueItems": False},
        {"type": "object", "properties": {"a": {"type": "integer"}}, "default": {"$ref": "https://x"}},  # data
        nested(MAX_DEPTH // 2 - 1),
    ],
)
def test_usable_schemas_pass(schema):
    assert schema_problem(schema) is None


@pytest.mark.parametrize(
    "schema, words",
    [
        ({"$ref": "http://example.com/schema.json"}, "$ref 'http://example.com/schema.json' points outside the schema"),
        (
            {"type": "object", "properties": {"a": {"$ref": "other.json#/x"}}},
            "at properties/a: $ref 'other.json#/x' points outside",
        ),
        ({"$defs": {"x": {"$anchor": "foo"}}, "$ref": "#foo"}, "'#foo' points outside the schema"),
        ({"type": "objekt"}, "invalid JSON schema at type"),
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems cannot be enforced"),
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not cannot be enforced"),
        ({"if": {"required": ["a"]}, "then": {"required": ["b"]}}, "if/then/else cannot be enforced"),
        ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired cannot be enforced"),
        ({"allOf": [{"required": ["a"]}, {"required": ["b"]}]}, "allOf of several schemas"),
        ({"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n", "minimum": 5}, "minimum next to $ref"),
        ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 3}, "minLength / maxLength beside a pattern"),
        (
            {"type": "object", "properties": {"e": {"type": "string", "format": "email", "minLength": 5}}},
            "at properties/e",
        ),
        ({"$defs": {"d": {"type": "array", "uniqueItems": True}}, "$ref": "#/$defs/d"}, "at $defs/d"),
        (nested(300), f"nests more than {MAX_DEPTH} levels deep; at most {MAX_DEPTH} are accepted"),
    ],
)
def test_unusable_schemas_say_why(schema, words):
    problem = schema_problem(schema)
    assert problem is not None and words in problem, problem
    assert "recursion" not in problem


def test_the_walk_does_not_recurse_on_a_very_deep_schema():
    deep: list = []
    for _ in range(100_000):  # far past Python's recursion limit
        deep = [deep]
    assert "nests" in schema_problem({"type": "array", "items": {"enum": deep}})


@pytest.mark.parametrize(
    "schema, violation",
    [
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "[1,1]"),
        ({"not": {"type": "string"}}, '"a"'),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "if": {"properties": {"a": {"const": 1}}, "required": ["a"]},
                "then": {"required": ["b"]},
            },
            '{"a":1}',
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "dependentRequired": {"a": ["b"]},
            },
            '{"a":1}',
        ),
        (
            {
                "allOf": [
                    {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                    {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]},
                ]
            },
            '{"a":1}',
        ),
        ({"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n", "minimum": 5}, "1"),
        ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 3}, '"abcdef"'),
        ({"type": "string", "format": "email", "minLength": 10}, '"a@b.co"'),
    ],
)
def test_what_is_refused_is_what_xgrammar_would_drop(schema, violation):
    """Why these schemas are refused: compiled as the engine compiles them (compact JSON, strict), the grammar
    accepts an answer that breaks the schema. If a newer xgrammar enforces one, this fails: allow it then."""
    import xgrammar
    from xgrammar.testing import _is_grammar_accept_string

    from glm_vision.engine.constraints import JSON_SEPARATORS

    grammar = xgrammar.Grammar.from_json_schema(
        json.dumps(schema), any_whitespace=False, separators=JSON_SEPARATORS, strict_mode=True
    )
    assert _is_grammar_accept_string(grammar, violation)
    assert schema_problem(schema) is not None
