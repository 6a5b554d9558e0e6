"""The results file: one record per image, JSONL or CSV, appended as answers finish and read back
to resume a run."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

FIELDS = [
    "image",
    "answer",
    "grounding",
    "reasoning",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "seconds",
    "ttft_s",
    "error",
    "prompt",
    "run",
]
# What makes two runs the same run: a resumed run only skips images answered with all of these equal.
RUN_SETTINGS = (
    "system",
    "no_thinking",
    "max_tokens",
    "temperature",
    "seed",
    "model",
    "api_base",
    "remote_model",
    "max_pixels",
    "thinking_budget",
)


def run_key(prompt: str, args, answer_format: str = "") -> str:
    """A short digest of the question and the settings that shape the answers (the schema or choices too)."""
    settings = {name: getattr(args, name, None) for name in RUN_SETTINGS}
    if answer_format:
        settings["answer_format"] = answer_format
    text = json.dumps({"prompt": prompt, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def csv_row(record: dict) -> dict:
    """Lists and objects (the `grounding` list) as JSON text in their CSV cell."""
    return {
        key: json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value
        for key, value in record.items()
    }


class ResultsFile:
    """Appends one record per image, flushed at once; reads back what an earlier run wrote."""

    def __init__(self, path: Path, fmt: str, extra_columns: list[str] | None = None) -> None:
        self.path = path
        self.fmt = fmt
        self.columns = FIELDS + (extra_columns or [])  # CSV: the schema's flattened fields or the choices' p_*
        self.csv_only = set(extra_columns or [])  # JSONL keeps the parsed object / the probabilities instead

    def read(self) -> list[dict]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return []
        if self.fmt == "csv":
            with self.path.open(newline="", encoding="utf-8") as f:
                return [row for row in csv.DictReader(f) if row.get("image")]
        records = []
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short when an earlier run was killed: that image is redone
                if isinstance(record, dict) and record.get("image"):
                    records.append(record)
        return records

    def rewrite(self, records: list[dict]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", newline="", encoding="utf-8") as f:
            if self.fmt == "csv":
                writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(csv_row(record) for record in records)
            else:
                for record in records:
                    f.write(self._line(record))
        os.replace(temporary, self.path)

    def open(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not fresh:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        self._file = self.path.open("a", newline="", encoding="utf-8")
        if not fresh and needs_newline:
            self._file.write("\n")
        if self.fmt == "csv":
            # a resumed file keeps its own header (one written before a column was added stays aligned)
            columns = self.columns if fresh else (self._header() or self.columns)
            self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")
            if fresh:
                self._writer.writeheader()
        return self

    def _header(self) -> list[str]:
        with self.path.open(newline="", encoding="utf-8") as f:
            return next(csv.reader(f), [])

    def write(self, record: dict) -> None:
        if self.fmt == "csv":
            self._writer.writerow(csv_row(record))
        else:
            self._file.write(self._line(record))
        self._file.flush()
        os.fsync(self._file.fileno())

    def _line(self, record: dict) -> str:
        kept = {key: value for key, value in record.items() if key not in self.csv_only}
        return json.dumps(kept, ensure_ascii=False) + "\n"

    def close(self) -> None:
        self._file.close()
