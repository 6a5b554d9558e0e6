"""backend/json_schema.py: which JSON schemas can constrain an answer, checked before any GPU work. xgrammar
itself lets a reference to another document match any JSON (a warning in its log, nothing in the answer), so
such a schema must be refused, not silently loosened; and a deep schema must be refused in words, not by a
RecursionError's text."""

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
        nested(MAX_DEPTH // 2 - 1),
    ],
)
def test_usable_schemas_pass(schema):
    assert schema_problem(schema) is None


@pytest.mark.parametrize(
    "schema, words",
    [
        ({"$ref": "http://example.com/schema.json"}, "$ref 'http://example.com/schema.json' points outside the schema"),
        ({"type": "object", "properties": {"a": {"$ref": "other.json#/x"}}}, "at properties/a points outside"),
        ({"$defs": {"x": {"$anchor": "foo"}}, "$ref": "#foo"}, "'#foo' points outside the schema"),
        ({"type": "objekt"}, "invalid JSON schema at type"),
        (nested(300), f"nests 129 levels deep; at most {MAX_DEPTH} are accepted"),
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
