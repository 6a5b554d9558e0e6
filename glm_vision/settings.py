"""Command-line flags and GLMV_* environment variables -> one frozen Settings object.

Every flag `--some-flag` can also be given as the environment variable `GLMV_SOME_FLAG`; a flag
on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path

REAL_MODEL_ID = "zai-org/GLM-4.6V-Flash"
PIXELS_PER_IMAGE_TOKEN = 28 * 28
MAX_IMAGE_TOKENS = 6144  # GLM-4.6V-Flash's own cap per image


@dataclass(frozen=True)
class Settings:
    model: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    backend: str = "local"
    api_base: str | None = None
    remote_model: str | None = None
    remote_api_key: str | None = None
    max_pixels: int = MAX_IMAGE_TOKENS * PIXELS_PER_IMAGE_TOKEN
    max_images_per_message: int = 8
    max_upload_mb: float = 20.0
    pdf_max_pages: int = 8
    pdf_dpi: int = 144
    max_context_tokens: int = 16384
    max_new_tokens: int = 1024
    vision_cache_mb: int = 1024
    kv_cache_mb: int = 4096
    session_idle_minutes: float = 30.0
    max_sessions: int = 64
    queue_size: int = 32
    max_batch: int = 0
    prefill_chunk_tokens: int = 4096  # H200, 32 screenshots at once: TTFT p95 4.44-4.55 s (2,048: 4.50-4.73)
    compile: str = "auto"
    decode_attention: str = "auto"
    decode_matmul: str = "auto"
    decode_pdl: str = "auto"
    scheduler_policy: str = "prefill-first"
    allow_remote_images: bool = False
    remote_image_hosts: str = ""
    remote_image_max_mb: float = 10.0
    remote_image_timeout_s: float = 10.0
    mcp: bool = False
    prompt: str | None = None
    image: tuple[str, ...] = ()
    thinking: bool = True
    history: bool = True
    data_dir: str = ""
    history_max_chats: int = 1000
    history_max_mb: int = 2048

    @property
    def max_upload_bytes(self) -> int:
        """The upload-size rule: a file (or a data URL's decoded bytes) may be at most this large."""
        return int(self.max_upload_mb * 1e6)

    @property
    def upload_limits(self) -> dict:
        """`load_media`'s limits for a file a user hands in (size, PDF pages and their resolution)."""
        return {"max_bytes": self.max_upload_bytes, "max_pages": self.pdf_max_pages, "pdf_dpi": self.pdf_dpi}

    @property
    def history_dir(self) -> Path:
        """Where the chat history lives: --data-dir, else the per-user data folder."""
        return Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()

    @property
    def max_image_tokens(self) -> int:
        return max(1, self.max_pixels // PIXELS_PER_IMAGE_TOKEN)


_HELP = {
    "model": "'auto' (GLM-4.6V-Flash on a CUDA GPU when its weights are here, else the bundled demo model), a local path or a hub id",
    "device": "auto | cuda | cpu",
    "dtype": "auto (bfloat16 on CUDA, float32 on CPU) | bfloat16 | float32",
    "attn": "auto (flash_attention_2 when flash-attn imports and CUDA is present, else sdpa) | flash_attention_2 | sdpa",
    "host": "address to bind; keep 127.0.0.1 unless you set --api-key",
    "port": "port for the web UI and the /v1 API",
    "api_key": "require 'Authorization: Bearer KEY' on the API and a login on the UI",
    "backend": "local (load the model here) | openai (front an OpenAI-compatible server given by --api-base)",
    "api_base": "base URL of the OpenAI-compatible server for --backend openai, e.g. http://gpu-box:8000/v1",
    "remote_model": "model name to request from --api-base (default: the first one it lists)",
    "remote_api_key": "API key for --api-base (default: OPENAI_API_KEY, else none)",
    "max_pixels": "largest image area in pixels after resizing (6144 tokens x 784 px by default); lower it to save memory",
    "max_images_per_message": "most images (PDF pages included) in one message",
    "max_upload_mb": "largest accepted upload, checked before decoding",
    "pdf_max_pages": "most PDF pages turned into images per file",
    "pdf_dpi": "resolution at which PDF pages are rendered",
    "max_context_tokens": "longest prompt + answer; longer prompts are refused before any GPU work",
    "max_new_tokens": "default answer length limit",
    "vision_cache_mb": "budget for cached image features over all sessions",
    "kv_cache_mb": "budget for cached conversation KV over all sessions",
    "session_idle_minutes": "free a session's caches after this long without use",
    "max_sessions": "most sessions holding caches at once (least recently used are freed first)",
    "queue_size": "most requests waiting for the GPU; past it new requests are refused as busy",
    "max_batch": "most requests decoded together (0: as many as free GPU memory holds at full context, up to 32; 4 on CPU)",
    "prefill_chunk_tokens": "prompt tokens prefilled per step while other streams decode",
    "compile": "auto | on | off: the compiled decode step (CUDA only)",
    "scheduler_policy": "prefill-first (new prompts take a step's token budget first: lower time to first token "
    "under a burst, measured) | decode-first (running streams keep their pace first)",
    "decode_attention": "auto | compiled | triton: the decode step's attention as two Triton split-K kernels (auto: "
    "on CUDA) or three compiled kernels (auto: elsewhere)",
    "decode_matmul": "auto | cublas | triton: the decode step's matrix products as Triton GEMVs with the bias and "
    "SiLU x up fused in, or through cuBLAS (auto: on CUDA each product the way the warm-up measured faster at "
    "each batch size; cuBLAS on the CPU)",
    "decode_pdl": "auto | on | off: the decode step's Triton kernels launched with programmatic dependent launch "
    "(each placed on the GPU while the one before it still runs; auto: on Hopper and later GPUs)",
    "allow_remote_images": "let API requests name http(s) image URLs, fetched by the server (off: refused, no SSRF)",
    "remote_image_hosts": "comma-separated host allowlist for --allow-remote-images (required when it is on)",
    "remote_image_max_mb": "largest remote image fetched",
    "remote_image_timeout_s": "time limit for fetching one remote image",
    "mcp": "also expose the chat as a tool through Gradio's MCP server",
    "prompt": "answer this one prompt on the command line and exit (no server)",
    "image": "image or PDF for --prompt (repeatable)",
    "thinking": "let the model think before answering (--no-thinking switches it off)",
    "history": "keep each user's chats in a list that survives restarts (--no-history: chats live in the tab only)",
    "data_dir": "folder of the chat history (a SQLite file and the chats' images); default "
    "$XDG_DATA_HOME/glm-vision, else ~/.local/share/glm-vision",
    "history_max_chats": "most chats kept per user",
    "history_max_mb": "most megabytes (MiB) of chats and their images kept per user",
}


def default_data_dir() -> Path:
    """The per-user data folder (XDG): $XDG_DATA_HOME/glm-vision, else ~/.local/share/glm-vision."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "glm-vision"


def _env_name(field_name: str) -> str:
    return "GLMV_" + field_name.upper()


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected a boolean (1/0, true/false, yes/no, on/off), got {text!r}")


def build_parser(prog: str = "app.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="glm-vision: GLM-4.6V-Flash with a web UI and an OpenAI-compatible API on one port. "
        "Every flag can also be set through the environment variable GLMV_<FLAG> (e.g. GLMV_API_KEY).",
    )
    defaults = Settings()
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{_HELP[f.name]} [env {_env_name(f.name)}]"
        if f.name == "image":
            parser.add_argument(flag, action="append", default=None, help=help_text)
        elif isinstance(default, bool):
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text + f" (default {'on' if default else 'off'})",
            )
        else:
            kind = int if isinstance(default, int) else float if isinstance(default, float) else str
            shown = f" (default {default})" if default != "" else ""
            parser.add_argument(flag, type=kind, default=None, help=help_text + shown)
    return parser


def load_settings(
    argv: list[str] | None = None, environ: dict[str, str] | None = None, prog: str = "app.py"
) -> Settings:
    """Flags win over GLMV_* variables, which win over the defaults."""
    environ = os.environ if environ is None else environ
    args = build_parser(prog).parse_args(argv)
    values: dict[str, object] = {}
    defaults = Settings()
    for f in fields(Settings):
        cli_value = getattr(args, f.name)
        if cli_value is not None:
            values[f.name] = tuple(cli_value) if f.name == "image" else cli_value
            continue
        env_value = environ.get(_env_name(f.name))
        if env_value is None or env_value == "":
            continue
        default = getattr(defaults, f.name)
        try:
            if f.name == "image":
                values[f.name] = tuple(p for p in env_value.split(os.pathsep) if p)
            elif isinstance(default, bool):
                values[f.name] = _parse_bool(env_value)
            elif isinstance(default, int):
                values[f.name] = int(env_value)
            elif isinstance(default, float):
                values[f.name] = float(env_value)
            else:
                values[f.name] = env_value
        except ValueError as exc:
            raise SystemExit(f"error: {_env_name(f.name)}={env_value!r}: {exc}") from None
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    problems = []
    if s.device not in {"auto", "cuda", "cpu"}:
        problems.append(f"--device must be auto, cuda or cpu, not {s.device!r}")
    if s.dtype not in {"auto", "bfloat16", "float32"}:
        problems.append(f"--dtype must be auto, bfloat16 or float32, not {s.dtype!r}")
    if s.attn not in {"auto", "flash_attention_2", "sdpa"}:
        problems.append(f"--attn must be auto, flash_attention_2 or sdpa (eager is never used), not {s.attn!r}")
    if s.backend not in {"local", "openai"}:
        problems.append(f"--backend must be local or openai, not {s.backend!r}")
    if s.backend == "openai" and not s.api_base:
        problems.append("--backend openai needs --api-base URL")
    if s.scheduler_policy not in {"prefill-first", "decode-first"}:
        problems.append(f"--scheduler-policy must be prefill-first or decode-first, not {s.scheduler_policy!r}")
    if s.decode_attention not in {"auto", "compiled", "triton"}:
        problems.append(f"--decode-attention must be auto, compiled or triton, not {s.decode_attention!r}")
    if s.decode_matmul not in {"auto", "cublas", "triton"}:
        problems.append(f"--decode-matmul must be auto, cublas or triton, not {s.decode_matmul!r}")
    if s.decode_pdl not in {"auto", "on", "off"}:
        problems.append(f"--decode-pdl must be auto, on or off, not {s.decode_pdl!r}")
    if s.compile not in {"auto", "on", "off"}:
        problems.append(f"--compile must be auto, on or off, not {s.compile!r}")
    if not PIXELS_PER_IMAGE_TOKEN * 4 <= s.max_pixels <= MAX_IMAGE_TOKENS * PIXELS_PER_IMAGE_TOKEN:
        problems.append(
            f"--max-pixels must be between {PIXELS_PER_IMAGE_TOKEN * 4} and "
            f"{MAX_IMAGE_TOKENS * PIXELS_PER_IMAGE_TOKEN} (4 to {MAX_IMAGE_TOKENS} image tokens)"
        )
    if s.image and s.prompt is None:
        problems.append("--image needs --prompt (the question to answer about it); without both, the server starts")
    if s.max_batch < 0:
        problems.append("--max-batch must be 0 (auto) or positive")
    for name in (
        "port",
        "max_images_per_message",
        "pdf_max_pages",
        "pdf_dpi",
        "max_context_tokens",
        "max_new_tokens",
        "max_sessions",
        "queue_size",
        "prefill_chunk_tokens",
        "history_max_chats",
        "history_max_mb",
    ):
        if getattr(s, name) <= 0:
            problems.append(f"--{name.replace('_', '-')} must be positive")
    if problems:
        raise SystemExit("error: " + "; ".join(problems))
