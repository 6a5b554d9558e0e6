"""Whether a JSON schema can constrain an answer here, checked before any GPU work by every front (the API's
response_format, structured_outputs.json and enforced tool parameters; the batch CLI's --json-schema): valid
against its meta-schema, nested no deeper than MAX_DEPTH, and nothing in it that xgrammar, which compiles it,
would silently drop. xgrammar 0.2.9 lets a `$ref` to another document match any JSON, and compiles but does not
enforce the keywords in UNENFORCED, the constraints next to a `$ref`, the intersection of several `allOf`
schemas, or a length bound beside a `pattern` or `format` (each checked against its grammar: a violating answer
was accepted). Such a schema is refused, naming the keyword and where it is, rather than loosened unseen.
Annotations (`format` alone, `contentEncoding`, `description`, ...) are not constraints and pass."""

from __future__ import annotations

from collections.abc import Iterator

MAX_DEPTH = 128  # JSON levels (an object property is two: the property's schema inside "properties")

UNENFORCED = {
    "uniqueItems": "uniqueItems",
    "not": "not",
    "if": "if/then/else",
    "then": "if/then/else",
    "else": "if/then/else",
    "dependentRequired": "dependentRequired",
    "dependentSchemas": "dependentSchemas",
    "dependencies": "dependencies",
}
# What may stand next to a `$ref` without being a constraint of its own.
REF_ANNOTATIONS = {
    "$ref", "$defs", "definitions", "$schema", "$id", "$anchor", "$comment", "title", "description", "default",
    "examples", "deprecated", "readOnly", "writeOnly",
}  # fmt: skip
# Keywords whose value is a schema, a list of schemas, or a mapping of names to schemas.
ONE_SCHEMA = (
    "items", "additionalProperties", "unevaluatedProperties", "unevaluatedItems", "contains", "propertyNames", "not",
    "if", "then", "else", "additionalItems",
)  # fmt: skip
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def schema_problem(schema: dict) -> str | None:
    """What makes `schema` unusable here, in words for the user; None when it is usable."""
    depth = _depth(schema)
    if depth > MAX_DEPTH:
        return f"the JSON schema nests more than {MAX_DEPTH} levels deep; at most {MAX_DEPTH} are accepted"
    problem = _meta_schema_problem(schema)
    if problem is not None:
        return problem
    for path, node in _schemas(schema):
        problem = _node_problem(node)
        if problem is not None:
            return f"the JSON schema{' at ' + path if path else ''}: {problem}"
    return None


def _node_problem(node: dict) -> str | None:
    ref = node.get("$ref")
    if isinstance(ref, str) and not (ref == "#" or ref.startswith("#/")):
        return (
            f"$ref {ref!r} points outside the schema; only references inside it ('#/$defs/...') are resolved: "
            "put that schema under $defs"
        )
    if isinstance(ref, str):
        beside = sorted(set(node) - REF_ANNOTATIONS)
        if beside:
            return f"{', '.join(beside)} next to $ref would not be applied; move it into the referenced schema"
    for key, name in UNENFORCED.items():
        if key in node and not (key == "uniqueItems" and node[key] is False):
            return f"{name} cannot be enforced by constrained decoding here; leave it out or restate the schema"
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) > 1:
        return "allOf of several schemas (their intersection) cannot be enforced here; merge them into one schema"
    if ("pattern" in node or "format" in node) and ("minLength" in node or "maxLength" in node):
        return "minLength / maxLength beside a pattern or format would not be applied; put the length in the pattern"
    return None


def _schemas(schema: dict) -> Iterator[tuple[str, dict]]:
    """Every subschema with its path (keywords and names joined by '/'), the root first, without recursion."""
    stack = [("", schema)]
    while stack:
        path, node = stack.pop()
        yield path, node
        children = []
        for key in ONE_SCHEMA:
            if isinstance(node.get(key), dict):
                children.append((_join(path, key), node[key]))
        for key in SCHEMA_LISTS:
            if isinstance(node.get(key), list):
                children += [(_join(path, f"{key}/{i}"), s) for i, s in enumerate(node[key]) if isinstance(s, dict)]
        for key in SCHEMA_MAPS:
            if isinstance(node.get(key), dict):
                children += [(_join(path, f"{key}/{name}"), s) for name, s in node[key].items() if isinstance(s, dict)]
        stack.extend(reversed(children))


def _join(path: str, key: str) -> str:
    return f"{path}/{key}" if path else key


def _depth(value) -> int:
    """How deeply `value` nests (dicts and lists), without recursion; stops counting past MAX_DEPTH + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            continue
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack += [(child, depth + 1) for child in children if isinstance(child, (dict, list))]
    return deepest


def _meta_schema_problem(schema: dict) -> str | None:
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return f"invalid JSON schema{' at ' + where if where else ''}: {exc.message}"
    except (jsonschema.exceptions.UndefinedTypeCheck, RecursionError, ValueError, TypeError) as exc:
        return f"invalid JSON schema: {exc}"
    return None
