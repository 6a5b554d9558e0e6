"""Ask one question about many images: folder (or glob) in, one JSONL or CSV record per image out.

    python -m glm_vision.batch --input shots/ --prompt "Is there an error dialog?" --out results.jsonl
    python -m glm_vision.batch --input "scans/**/*.pdf" --prompt-file q.txt --out results.csv
    python -m glm_vision.batch --input shots/ --prompt "..." --out r.jsonl --api-base http://gpu:8000/v1

Each record has the image path, the answer, the reasoning (when thinking is on), finish reason, token
counts (null when the image failed), timing, an error (empty when it worked), the prompt and `run`, a
digest of the prompt and the settings that shape answers. With --json-schema the answer is constrained to the
schema and the parsed object is in the record (`parsed`; flattened `json.*` columns in CSV); with --choices the
answer is one of the choices and `choice_probs` gives each choice's probability (`p_*` columns in CSV). `grounding`
lists the answer's boxes and points (GLM writes 0-1000) with pixel coordinates of the image (JSON text in CSV);
--annotate DIR draws them on a copy of each image. Records are written as they finish, so a
run that stops can be resumed with the same command: images already answered by the same run are
skipped (`--retry-errors` redoes the ones that failed); a file written for another question or other
settings is refused unless `--overwrite` replaces it. A bad image is recorded with its error and the run goes on. A PDF is one record
with its pages as images. Works with the local engine (default) or any OpenAI-compatible server
(`--api-base`, e.g. vLLM, SGLang or a running glm-vision).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..process import exit_now


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m glm_vision.batch",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 when the run completed (failed images are recorded in the "
        "'error' field), 2 for bad arguments, 3 when the model or server cannot be reached.",
    )
    add_run_flags(p)
    add_answer_flags(p)
    add_backend_flags(p)
    return p


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """What to read, what to ask, where to write."""
    p.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="DIR_OR_GLOB",
        help="a folder, a file or a glob ('shots/*', 'docs/**/*.pdf'); folders and globs keep image and PDF "
        "files only; repeatable",
    )
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--prompt", help="the question asked about every image")
    q.add_argument("--prompt-file", type=Path, help="a file holding the question")
    p.add_argument("--out", required=True, type=Path, help="results file: .jsonl (one JSON object a line) or .csv")
    p.add_argument("--format", choices=["jsonl", "csv"], help="override the format implied by --out's extension")
    p.add_argument("--system", help="a system prompt for every request")
    p.add_argument("--recursive", action="store_true", help="also take images from sub-folders of a folder input")
    p.add_argument("--retry-errors", action="store_true", help="redo images whose earlier record has an error")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out instead of resuming it (a file of another question is never resumed)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="requests in flight at once (useful with --api-base: vLLM/SGLang batch them); default 1",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_answer_flags(p: argparse.ArgumentParser) -> None:
    """How each answer is generated and what is recorded of it."""
    p.add_argument("--no-thinking", action="store_true", help="switch thinking off (faster, no reasoning field)")
    p.add_argument("--max-tokens", type=int, default=1024, help="answer length limit, thinking included (default 1024)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: the model's 0.8; 0 is greedy)")
    p.add_argument("--seed", type=int, help="sampling seed, for reproducible answers")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument(
        "--json-schema",
        type=Path,
        metavar="FILE",
        help="a JSON Schema file: every answer is JSON that validates against it (constrained decoding)",
    )
    shape.add_argument(
        "--choices",
        metavar="A,B,...",
        help="comma-separated answers, e.g. yes,no: the answer is exactly one of them, and each choice's "
        "probability (from the first answer token's logprobs) is recorded — a confidence for moderation",
    )
    p.add_argument(
        "--thinking-budget",
        type=int,
        metavar="N",
        help="most reasoning tokens per answer; then the model is made to close its thinking and answer",
    )
    p.add_argument(
        "--annotate",
        type=Path,
        metavar="DIR",
        help="write each answered image to DIR with the answer's boxes and points drawn (numbered, labelled; "
        "paths mirror the inputs', as PNG); every record has them in 'grounding' with pixel coordinates",
    )


def add_backend_flags(p: argparse.ArgumentParser) -> None:
    """The local engine (default) or a remote OpenAI-compatible server."""
    local = p.add_argument_group("local engine (default)")
    local.add_argument("--model", default="auto", help="'auto', a local checkpoint path or a hub id (as app.py)")
    local.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    local.add_argument("--max-pixels", type=int, help="largest image area after resizing (as app.py)")
    remote = p.add_argument_group("remote server")
    remote.add_argument("--api-base", help="an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1")
    remote.add_argument("--api-key", help="its API key (default: OPENAI_API_KEY)")
    remote.add_argument("--remote-model", help="model name to ask for (default: the first the server lists)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest image file accepted (default 20)")


def main(argv: list[str] | None = None) -> int:
    from .runner import run

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(build_parser().parse_args(argv))


def entry_point() -> None:
    exit_now(main())  # every record is written, flushed and fsynced by now
