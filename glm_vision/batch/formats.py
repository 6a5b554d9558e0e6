"""Answers a program reads: --json-schema (the parsed object; flattened columns in CSV) and --choices
(one of a list, with each choice's probability from the logprobs)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from ..backend import OutputConstraint
from ..backend.json_schema import schema_problem
from ..conversation import THINK_CLOSE


class FormatError(Exception):
    """A --json-schema or --choices that cannot be used (exit status 2)."""


@dataclass(frozen=True)
class AnswerFormat:
    schema: dict | None = None
    choices: tuple[str, ...] = ()

    @property
    def constraint(self) -> OutputConstraint | None:
        if self.schema is not None:
            return OutputConstraint("json_schema", json.dumps(self.schema, sort_keys=True))
        if self.choices:
            return OutputConstraint("choice", choices=self.choices)
        return None

    @property
    def digest_text(self) -> str:
        """What enters the run digest: a changed schema or list is another run."""
        return json.dumps({"schema": self.schema, "choices": list(self.choices)}, sort_keys=True)

    def columns(self) -> list[str]:
        """The extra CSV columns: `json.a.b` per leaf property of the schema, `p_<choice>` per choice."""
        if self.schema is not None:
            return ["json." + path for path in _leaf_paths(self.schema)]
        return ["p_" + choice for choice in self.choices]

    def fields(self) -> list[str]:
        """The extra JSONL fields."""
        return ["parsed"] if self.schema is not None else ["choice_probs"] if self.choices else []

    def fill(self, record: dict, answer: str, logprobs) -> None:
        """Add the parsed object or the choice probabilities (and their CSV columns) to a record."""
        if self.schema is not None:
            try:
                parsed = json.loads(answer)
            except json.JSONDecodeError:
                parsed = None  # cut off by --max-tokens: finish_reason says "length"
            record["parsed"] = parsed
            for path in _leaf_paths(self.schema):
                value = _lookup(parsed, path)
                nested = isinstance(value, (list, dict))
                record["json." + path] = json.dumps(value, ensure_ascii=False) if nested else value
        elif self.choices:
            probs = choice_probabilities(logprobs or (), self.choices)
            record["choice_probs"] = probs
            for choice in self.choices:
                record["p_" + choice] = None if probs is None else round(probs[choice], 6)


def load_format(args) -> AnswerFormat:
    if getattr(args, "json_schema", None) is not None:
        try:
            schema = json.loads(args.json_schema.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"cannot read --json-schema {args.json_schema}: {exc}") from None
        if not isinstance(schema, dict):
            raise FormatError(f"--json-schema {args.json_schema} must hold a JSON object (a schema)")
        _check_schema(schema, args.json_schema)
        return AnswerFormat(schema=schema)
    if getattr(args, "choices", None):
        choices = tuple(c.strip() for c in args.choices.split(","))
        if len(choices) < 2 or not all(choices) or len(set(choices)) != len(choices):
            raise FormatError("--choices takes two or more different, non-empty answers separated by commas")
        return AnswerFormat(choices=choices)
    return AnswerFormat()


def _check_schema(schema: dict, path) -> None:
    problem = schema_problem(schema)
    if problem is not None:
        raise FormatError(f"--json-schema {path}: {problem}")


def _leaf_paths(schema: dict, prefix: str = "") -> list[str]:
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or not properties:
        return [prefix] if prefix else ["value"]
    paths = []
    for name, sub in properties.items():
        path = f"{prefix}.{name}" if prefix else name
        is_object = isinstance(sub, dict) and isinstance(sub.get("properties"), dict) and sub["properties"]
        paths.extend(_leaf_paths(sub, path) if is_object else [path])
    return paths


def _lookup(value, path: str):
    if path == "value" and not isinstance(value, dict):
        return value
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def choice_probabilities(logprobs, choices: tuple[str, ...]) -> dict[str, float] | None:
    """Each choice's probability: the model's distribution over the first token of the answer (after
    `</think>` and any newline), its top logprobs summed per choice whose text the token begins, then
    normalised over the choices (a token that begins several choices is shared among them). None when no
    logprobs came back or no choice is among the top tokens."""
    entries = list(logprobs)
    start = max((i + 1 for i, e in enumerate(entries) if e.token == THINK_CLOSE), default=0)
    while start < len(entries) and not entries[start].token.strip():
        start += 1
    if start >= len(entries):
        return None
    first = entries[start]
    candidates = {t.token: t.logprob for t in first.top}
    candidates.setdefault(first.token, first.logprob)
    mass = dict.fromkeys(choices, 0.0)
    for token, logprob in candidates.items():
        if not token:
            continue
        owners = [c for c in choices if c.startswith(token)]
        for owner in owners:
            mass[owner] += math.exp(logprob) / len(owners)
    total = sum(mass.values())
    if total <= 0:
        return None
    return {choice: value / total for choice, value in mass.items()}
