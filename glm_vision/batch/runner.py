"""A whole batch run: plan what is left to do, answer it with some requests in flight, write each
record as it finishes."""

from __future__ import annotations

import csv
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from ..backend import ModelLoadError
from ..heap import freeze_startup_heap
from .answer import answer_one, make_backend
from .formats import AnswerFormat, FormatError, load_format
from .inputs import IMAGE_SUFFIXES, find_images
from .results import ResultsFile, run_key


class UsageError(Exception):
    """Bad arguments or an unusable results file: exit status 2 with this message."""


@dataclass
class Plan:
    results: ResultsFile
    todo: list[str]
    total: int
    prompt: str
    key: str
    format: AnswerFormat
    root: str = ""  # the inputs' common folder: --annotate mirrors the paths below it

    @property
    def skipped(self) -> int:
        return self.total - len(self.todo)


def read_prompt(args) -> str:
    if args.prompt_file is None:
        prompt = args.prompt
    else:
        try:
            prompt = args.prompt_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read --prompt-file: {exc}") from None
    if not prompt:
        raise UsageError("the prompt is empty")
    if args.concurrency < 1 or args.max_tokens < 1:
        raise UsageError("--concurrency and --max-tokens must be at least 1")
    if args.thinking_budget is not None and args.thinking_budget < 0:
        raise UsageError("--thinking-budget must be 0 or more")
    if getattr(args, "annotate", None) is not None and args.annotate.exists() and not args.annotate.is_dir():
        raise UsageError(f"--annotate {args.annotate} is a file; give a folder")
    return prompt


def earlier_records(results: ResultsFile, key: str, args) -> list[dict]:
    """What an earlier run wrote, if it asked the same question with the same settings."""
    try:
        previous = [] if args.overwrite else results.read()
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the existing {results.path}: {exc}") from None
    other = next((r for r in previous if r.get("run") != key), None)
    if other is not None:
        raise UsageError(
            f"{results.path} holds answers to another question or other settings (prompt {other.get('prompt')!r}); "
            "write to another --out, or pass --overwrite to replace it"
        )
    if args.overwrite or (args.retry_errors and any(r.get("error") for r in previous)):
        previous = [r for r in previous if not r.get("error")] if not args.overwrite else []
        results.rewrite(previous)
    return previous


def plan(args) -> Plan:
    prompt = read_prompt(args)
    try:
        answer_format = load_format(args)
    except FormatError as exc:
        raise UsageError(str(exc)) from None
    images = find_images(args.input, args.recursive)
    if not images:
        raise UsageError(f"no images found in {', '.join(args.input)} ({', '.join(sorted(IMAGE_SUFFIXES))})")
    results = ResultsFile(args.out, results_format(args), answer_format.columns())
    key = run_key(prompt, args, answer_format.digest_text if answer_format.constraint else "")
    done = {os.path.abspath(r["image"]) for r in earlier_records(results, key, args)}
    todo = [path for path in images if os.path.abspath(path) not in done]
    root = os.path.commonpath([os.path.dirname(os.path.abspath(path)) for path in images])
    return Plan(results, todo, len(images), prompt, key, answer_format, root)


def results_format(args) -> str:
    if args.format:
        return args.format
    suffix = args.out.suffix.lower()
    if suffix not in (".jsonl", ".csv", ".json", ".ndjson"):
        raise UsageError(f"--out {args.out}: unknown extension {suffix or '(none)'!r}; use .jsonl or .csv, or --format")
    return "csv" if suffix == ".csv" else "jsonl"


class Progress:
    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="img", disable=quiet, dynamic_ncols=True)
        self.answered = self.errors = 0

    def record(self, record: dict) -> None:
        if record["error"]:
            self.errors += 1
            self.bar.write(f"{record['image']}: {record['error']}")
        else:
            self.answered += 1
        self.bar.update(1)
        self.bar.set_postfix(ok=self.answered, errors=self.errors)


def answer_all(backend, work: Plan, args, progress: Progress) -> None:
    """Keep `--concurrency` requests in flight; write each record as soon as it is done."""
    pending = set()
    queue = iter(work.todo)
    with ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="batch") as pool:
        try:
            while True:
                while len(pending) < args.concurrency and (path := next(queue, None)) is not None:
                    pending.add(pool.submit(answer_one, backend, path, work, args))
                if not pending:
                    return
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    record = future.result()
                    work.results.write(record)
                    progress.record(record)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def run(args) -> int:
    try:
        work = plan(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if work.skipped:
        print(f"resuming: {work.skipped} of {work.total} images are already in {args.out}", file=sys.stderr)
    if not work.todo:
        print(f"nothing to do: all {work.total} images are in {args.out}", file=sys.stderr)
        return 0
    try:
        backend = make_backend(args)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    freeze_startup_heap()
    progress = Progress(len(work.todo), args.quiet)
    work.results.open()
    try:
        answer_all(backend, work, args, progress)
    except KeyboardInterrupt:
        written = progress.answered + progress.errors
        print(f"\ninterrupted: run the same command again to resume ({written} records written)", file=sys.stderr)
        return 130
    finally:
        progress.bar.close()
        work.results.close()
        backend.shutdown()
    print(
        f"done: {progress.answered} answered, {progress.errors} failed (see the 'error' field), {work.skipped} "
        f"already done -> {args.out}",
        file=sys.stderr,
    )
    return 0
