"""Find and load a GLM-4.6V/4.1V checkpoint with its processor, on the right device, dtype and attention."""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..backend import ModelLoadError
from ..settings import REAL_MODEL_ID, Settings

log = logging.getLogger(__name__)

DEMO_MODEL_DIR = Path(__file__).resolve().parents[2] / "assets" / "demo-model"
SUPPORTED_MODEL_TYPES = {"glm4v", "glm46v"}
GET_WEIGHTS_HINT = (
    f"get the weights with `huggingface-cli download {REAL_MODEL_ID}` (about 21 GB) "
    f"or pass --model /path/to/GLM-4.6V-Flash"
)


@dataclass(frozen=True)
class LoadedModel:
    model: object
    processor: object
    name: str
    device: str
    dtype: str
    attn: str
    is_demo: bool


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pick_device(requested: str) -> str:
    if requested == "cuda" and not cuda_available():
        raise ModelLoadError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    return requested


def pick_dtype(requested: str, device: str) -> str:
    if requested != "auto":
        return requested
    # fp16 overflows in the GLM-4 family: bfloat16 on the GPU, float32 on the CPU.
    return "bfloat16" if device == "cuda" else "float32"


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def pick_attention(requested: str, device: str) -> str:
    if requested == "flash_attention_2":
        if device != "cuda" or not flash_attn_available():
            raise ModelLoadError(
                "--attn flash_attention_2 needs a CUDA GPU and the flash-attn package; use --attn sdpa"
            )
        return requested
    if requested == "auto" and device == "cuda" and flash_attn_available():
        return "flash_attention_2"
    return "sdpa"  # never eager: 5x slower and 13 GiB more on a 1080p image


def _local_real_model() -> str | None:
    """The real model's snapshot directory if it is already in the local hub cache (no network)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(REAL_MODEL_ID, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not available locally"
        return None


def resolve_model(settings: Settings, device: str) -> tuple[str, bool]:
    """(path or hub id, is_demo) for --model; 'auto' never touches the network."""
    if settings.model != "auto":
        return settings.model, Path(settings.model).resolve() == DEMO_MODEL_DIR
    if device == "cuda":
        local = _local_real_model()
        if local:
            return local, False
        log.warning("GLM-4.6V-Flash weights are not in the local cache: starting the demo model; %s", GET_WEIGHTS_HINT)
    else:
        log.warning("no CUDA GPU: starting the bundled demo model; on a GPU machine %s", GET_WEIGHTS_HINT)
    if not (DEMO_MODEL_DIR / "config.json").exists():
        raise ModelLoadError(f"the bundled demo model is missing from {DEMO_MODEL_DIR}; {GET_WEIGHTS_HINT}")
    return str(DEMO_MODEL_DIR), True


def check_model_source(source: str) -> None:
    """Clear errors for the common mistakes before transformers raises a long traceback."""
    path = Path(source).expanduser()
    looks_like_path = path.is_absolute() or source.startswith((".", "~")) or path.exists() or source.count("/") != 1
    if not looks_like_path:
        return  # a hub id: checked when loading
    if not path.exists():
        raise ModelLoadError(f"model path {source} does not exist; {GET_WEIGHTS_HINT}")
    if not path.is_dir():
        raise ModelLoadError(f"model path {source} is a file; pass the checkpoint directory (the one with config.json)")
    config = path / "config.json"
    if not config.exists():
        raise ModelLoadError(
            f"{source} is not a model directory: it has no config.json. "
            f"Point --model at a GLM-4.6V checkpoint directory; {GET_WEIGHTS_HINT}"
        )
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config} cannot be read ({exc})") from None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"{source} holds a {model_type!r} model; glm-vision runs the GLM-4.6V / GLM-4.1V family "
            f"(model_type {' or '.join(sorted(SUPPORTED_MODEL_TYPES))})"
        )


def load_model(settings: Settings) -> LoadedModel:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    attn = pick_attention(settings.attn, device)
    source, is_demo = resolve_model(settings, device)
    check_model_source(source)
    offline = settings.model == "auto"
    log.info("loading %s on %s (%s, %s attention)", source, device, dtype, attn)
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=offline)
        model = AutoModelForImageTextToText.from_pretrained(
            source,
            dtype=getattr(torch, dtype),
            attn_implementation=attn,
            device_map=device,
            local_files_only=offline,
        )
    except OSError as exc:
        raise ModelLoadError(f"cannot load {source}: {exc}. {GET_WEIGHTS_HINT}") from None
    model.eval()
    model.requires_grad_(False)
    name = (
        REAL_MODEL_ID
        if source != settings.model and not is_demo
        else Path(source).name
        if Path(source).exists()
        else source
    )
    if is_demo:
        name = "glm-vision-demo"
    return LoadedModel(
        model=model, processor=processor, name=name, device=device, dtype=dtype, attn=attn, is_demo=is_demo
    )
