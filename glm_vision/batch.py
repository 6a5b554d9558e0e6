"""Ask one question about many images: folder (or glob) in, one JSONL or CSV record per image out.

    python -m glm_vision.batch --input shots/ --prompt "Is there an error dialog?" --out results.jsonl
    python -m glm_vision.batch --input "scans/**/*.pdf" --prompt-file q.txt --out results.csv
    python -m glm_vision.batch --input shots/ --prompt "..." --out r.jsonl --api-base http://gpu:8000/v1

Each record has the image path, the answer, the reasoning (when thinking is on), finish reason, token
counts, timing and an error (empty when it worked). Records are written as they finish, so a run
that stops can be resumed: images already in the output are skipped (`--retry-errors` redoes the
ones that failed). A bad image is recorded with its error and the run goes on. A PDF is one record
with its pages as images. Works with the local engine (default) or any OpenAI-compatible server
(`--api-base`, e.g. vLLM, SGLang or a running glm-vision).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import logging
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".pdf"}
FIELDS = ["image", "answer", "reasoning", "finish_reason", "prompt_tokens", "completion_tokens", "cached_tokens",
          "seconds", "ttft_s", "error"]

log = logging.getLogger("glm_vision.batch")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m glm_vision.batch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Exit status: 0 when the run completed (failed images are recorded in the "
                                "'error' field), 2 for bad arguments, 3 when the model or server cannot be reached.")
    p.add_argument("--input", action="append", required=True, metavar="DIR_OR_GLOB",
                   help="a folder, a file or a glob ('shots/*', 'docs/**/*.pdf'); folders and globs keep image and PDF "
                   "files only; repeatable")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--prompt", help="the question asked about every image")
    q.add_argument("--prompt-file", type=Path, help="a file holding the question")
    p.add_argument("--out", required=True, type=Path, help="results file: .jsonl (one JSON object a line) or .csv")
    p.add_argument("--format", choices=["jsonl", "csv"], help="override the format implied by --out's extension")
    p.add_argument("--system", help="a system prompt for every request")
    p.add_argument("--recursive", action="store_true", help="also take images from sub-folders of a folder input")
    p.add_argument("--retry-errors", action="store_true", help="redo images whose earlier record has an error")
    p.add_argument("--no-thinking", action="store_true", help="switch thinking off (faster, no reasoning field)")
    p.add_argument("--max-tokens", type=int, default=1024, help="answer length limit, thinking included (default 1024)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: the model's 0.8; 0 is greedy)")
    p.add_argument("--seed", type=int, help="sampling seed, for reproducible answers")
    p.add_argument("--concurrency", type=int, default=1,
                   help="requests in flight at once (useful with --api-base: vLLM/SGLang batch them); default 1")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    local = p.add_argument_group("local engine (default)")
    local.add_argument("--model", default="auto", help="'auto', a local checkpoint path or a hub id (as app.py)")
    local.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    local.add_argument("--max-pixels", type=int, help="largest image area after resizing (as app.py)")
    remote = p.add_argument_group("remote server")
    remote.add_argument("--api-base", help="an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1")
    remote.add_argument("--api-key", help="its API key (default: OPENAI_API_KEY)")
    remote.add_argument("--remote-model", help="model name to ask for (default: the first the server lists)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest image file accepted (default 20)")
    return p


# ---------------------------------------------------------------------------------- inputs
def find_images(inputs: list[str], recursive: bool) -> list[str]:
    found: list[str] = []
    seen: set[str] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            walker = path.rglob("*") if recursive else path.iterdir()
            matches = sorted(str(p) for p in walker if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            matches = [str(path)]
        else:
            matches = sorted(m for m in glob.glob(item, recursive=True)
                             if Path(m).is_file() and Path(m).suffix.lower() in IMAGE_SUFFIXES)
        for match in matches:
            key = os.path.abspath(match)
            if key not in seen:
                seen.add(key)
                found.append(match)
    return found


# ---------------------------------------------------------------------------------- output
class ResultsFile:
    """Appends one record per image, flushed at once; reads back what an earlier run wrote."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self.fmt = fmt

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
                writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(records)
            else:
                for record in records:
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
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
            self._writer = csv.DictWriter(self._file, fieldnames=FIELDS, extrasaction="ignore")
            if fresh:
                self._writer.writeheader()
        return self

    def write(self, record: dict) -> None:
        if self.fmt == "csv":
            self._writer.writerow(record)
        else:
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------------------------- work
def make_backend(args):
    from .settings import Settings

    if args.api_base:
        from .remote import RemoteBackend

        settings = Settings(backend="openai", api_base=args.api_base, remote_api_key=args.api_key,
                            remote_model=args.remote_model, queue_size=max(1, args.concurrency),
                            max_upload_mb=args.max_upload_mb)
        return RemoteBackend.connect(settings, wait_s=5.0)
    from .engine import Engine

    values = {"model": args.model, "device": args.device, "max_upload_mb": args.max_upload_mb,
              "queue_size": max(1, args.concurrency) + 1}
    if args.max_pixels:
        values["max_pixels"] = args.max_pixels
    return Engine.load(Settings(**values))


def answer_one(backend, path: str, prompt: str, args) -> dict:
    from .conversation import Message, split_output
    from .backend import EngineError, GenerationRequest, SamplingParams
    from .images import ImageError, load_media

    started = time.perf_counter()
    record = {name: "" for name in FIELDS}
    record["image"] = path
    try:
        images = load_media(path, max_bytes=int(args.max_upload_mb * 1e6))
        messages = [Message("system", args.system)] if args.system else []
        messages.append(Message("user", prompt, images))
        sampling = {"max_new_tokens": args.max_tokens}
        if args.temperature is not None:
            sampling["temperature"] = args.temperature
        if args.seed is not None:
            sampling["seed"] = args.seed
        request = GenerationRequest(messages, SamplingParams(**sampling), session_id="batch", cache_scope="batch",
                                    enable_thinking=not args.no_thinking)
        result = backend.submit(request).wait()
        parsed = split_output(result.text)
        usage = result.usage
        record.update(answer=parsed.answer, reasoning=parsed.reasoning, finish_reason=result.finish_reason,
                      prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                      cached_tokens=usage.cached_tokens, ttft_s=round(usage.ttft_s, 4))
    except ImageError as exc:
        record["error"] = f"bad image: {exc}"
    except EngineError as exc:
        record["error"] = exc.message
    except Exception as exc:  # noqa: BLE001 - one image must never end the run
        log.exception("unexpected failure on %s", path)
        record["error"] = f"{type(exc).__name__}: {exc}"
    record["seconds"] = round(time.perf_counter() - started, 4)
    return record


def run(args) -> int:
    fmt = args.format or ("csv" if args.out.suffix.lower() == ".csv" else "jsonl")
    if args.prompt_file is not None:
        try:
            prompt = args.prompt_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            print(f"error: cannot read --prompt-file: {exc}", file=sys.stderr)
            return 2
    else:
        prompt = args.prompt
    if not prompt:
        print("error: the prompt is empty", file=sys.stderr)
        return 2
    if args.concurrency < 1 or args.max_tokens < 1:
        print("error: --concurrency and --max-tokens must be at least 1", file=sys.stderr)
        return 2

    images = find_images(args.input, args.recursive)
    if not images:
        print(f"error: no images found in {', '.join(args.input)} ({', '.join(sorted(IMAGE_SUFFIXES))})", file=sys.stderr)
        return 2
    results = ResultsFile(args.out, fmt)
    try:
        previous = results.read()
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        print(f"error: cannot read the existing {args.out}: {exc}", file=sys.stderr)
        return 2
    if args.retry_errors and any(r.get("error") for r in previous):
        previous = [r for r in previous if not r.get("error")]
        results.rewrite(previous)
    done = {os.path.abspath(r["image"]) for r in previous}
    todo = [path for path in images if os.path.abspath(path) not in done]
    skipped = len(images) - len(todo)
    if skipped:
        print(f"resuming: {skipped} of {len(images)} images are already in {args.out}", file=sys.stderr)
    if not todo:
        print(f"nothing to do: all {len(images)} images are in {args.out}", file=sys.stderr)
        return 0

    from .backend import ModelLoadError

    try:
        backend = make_backend(args)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3

    from tqdm import tqdm

    answered = errors = 0
    results.open()
    progress = tqdm(total=len(todo), unit="img", disable=args.quiet, dynamic_ncols=True)
    pool = ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="batch")
    pending = set()
    queue = iter(todo)
    interrupted = False
    try:
        while True:
            while len(pending) < args.concurrency:
                path = next(queue, None)
                if path is None:
                    break
                pending.add(pool.submit(answer_one, backend, path, prompt, args))
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                record = future.result()
                results.write(record)
                if record["error"]:
                    errors += 1
                    progress.write(f"{record['image']}: {record['error']}")
                else:
                    answered += 1
                progress.update(1)
                progress.set_postfix(ok=answered, errors=errors)
    except KeyboardInterrupt:
        interrupted = True
        for future in pending:
            future.cancel()
        print(f"\ninterrupted: run the same command again to resume ({answered + errors} records written)", file=sys.stderr)
        return 130
    finally:
        progress.close()
        pool.shutdown(wait=not interrupted, cancel_futures=True)
        results.close()
        backend.shutdown()
    print(f"done: {answered} answered, {errors} failed (see the 'error' field), {skipped} already done -> {args.out}",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    code = main()
    # Every record is written, flushed and fsynced by now. Leave without the interpreter's native
    # teardown: under CPU load a native thread pool of the model stack (torch / tokenizers) can
    # abort at exit ("terminate called without an active exception"), turning a finished run into
    # exit status 134.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
