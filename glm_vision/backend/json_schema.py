"""Whether a JSON schema can constrain an answer here, checked before any GPU work by every front (the API's
response_format, structured_outputs.json and tool parameters; the batch CLI's --json-schema): valid against its
meta-schema, nested no deeper than MAX_DEPTH, and every `$ref` inside the schema itself. xgrammar, which
compiles the schema, only resolves `#/...` references: it would let a reference to another document match any
JSON at all, silently dropping that part of the constraint."""

from __future__ import annotations

MAX_DEPTH = 128  # JSON levels (an object property is two: the property's schema inside "properties")


def schema_problem(schema: dict) -> str | None:
    """What makes `schema` unusable here, in words for the user; None when it is usable."""
    depth, far_ref = _walk(schema)
    if depth > MAX_DEPTH:
        return f"the JSON schema nests {depth} levels deep; at most {MAX_DEPTH} are accepted"
    if far_ref is not None:
        ref, where = far_ref
        return (
            f"the JSON schema's $ref {ref!r}{' at ' + where if where else ''} points outside the schema; only "
            "references inside it ('#/$defs/...') are resolved: put that schema under $defs"
        )
    return _meta_schema_problem(schema)


def _walk(schema) -> tuple[int, tuple[str, str] | None]:
    """(deepest nesting, the first $ref that leaves the schema with its path), without recursion."""
    deepest, far_ref = 0, None
    stack = [(schema, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            continue  # deep enough to refuse: no need to go further
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            where = f"{path}/{key}" if path else str(key)
            if key == "$ref" and isinstance(value, str) and far_ref is None and not _inside(value):
                far_ref = (value, path)
            if isinstance(value, (dict, list)):
                stack.append((value, depth + 1, where))
    return deepest, far_ref


def _inside(ref: str) -> bool:
    return ref == "#" or ref.startswith("#/")


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
