"""Write a small, seeded, random-weight checkpoint of the real GLM-4.6V architecture.

    python -m glm_vision.synthetic.tiny OUTDIR [--seed 0] [--layers 2] [--hidden 128]

The checkpoint uses the same classes as GLM-4.6V-Flash (`Glm4vForConditionalGeneration`,
`Glm46VProcessor`), GLM's special tokens and a chat template in GLM-4.6V's prompt format, and a
byte-level BPE tokenizer trained offline. It loads with `from_pretrained` like the real model, so
tests and CPU benchmarks exercise the production code path.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

# GLM's special tokens, in the order of the real vocabulary (ids are ours, names are GLM's).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
    "<|begin_of_box|>",
    "<|end_of_box|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
    "<tool_response>",
    "</tool_response>",
]
# Tokens the model emits inside answers (all from the box markers on); they must survive decoding (not "special").
VISIBLE_ADDED_TOKENS = set(SPECIAL_TOKENS[SPECIAL_TOKENS.index("<|begin_of_box|>") :])
STOP_TOKENS = ["<|endoftext|>", "<|user|>", "<|observation|>"]

# GLM-4.6V-Flash's own preprocessing: 28 px per LLM token, at most 6,144 tokens per image.
IMAGE_PROCESSOR_CONFIG = {
    "image_processor_type": "Glm46VImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 12544, "longest_edge": 9633792},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_convert_rgb": True,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
}

_CORPUS = """
What is in this image? Describe the picture. Which shapes do you see? How many objects are there?
The image shows a red circle on the left and a blue square on the right.
There are three green triangles at the top and two yellow stars at the bottom.
What word is written? The word is HELLO. The answer is 42. Color, shape, count, position.
orange purple pink white black gray brown cyan magenta circle square triangle star rectangle
left right top bottom center middle corner above below next to one two three four five
The quick brown fox jumps over the lazy dog. A screenshot of a login page with a button.
图片里有什么？请描述这张图片。左边有一个红色的圆形，右边有一个蓝色的正方形。
有几个物体？三个绿色的三角形。写的是什么字？颜色、形状、数量、位置。你好，世界！
上面 下面 中间 红色 蓝色 绿色 黄色 紫色 橙色 圆形 正方形 三角形 星形 长方形 一 二 三 四 五
Emoji: 😀 🎉 👍 🚀 ✅ ❤️ 🌍 中文和 emoji 混合 😀 测试。 Ünïcödé àccents — “quotes” … € £ ¥
مرحبا بالعالم שלום עולם Привет мир こんにちは世界 안녕하세요
def main(): return {"x": [1, 2, 3]}  # code block | table | $x^2$ \\frac{a}{b}
"""


def chat_template() -> str:
    return resources.files("glm_vision.synthetic").joinpath("chat_template.jinja").read_text(encoding="utf-8")


def train_tokenizer(vocab_size: int = 700, extra_corpus: str = ""):
    """A byte-level BPE tokenizer (every string encodes) with GLM's special tokens.

    `extra_corpus` (the demo model's training sentences) makes its vocabulary tokenize compactly,
    and then CJK characters and digits are split one per pre-token so Chinese words stay
    compositional (no merged "red triangle" tokens) and a box's coordinates are written digit by
    digit (ten tokens to learn, not hundreds of merged numbers); without it the tokenizer is the
    tiny test model's."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if extra_corpus:
        cjk = pre_tokenizers.Split(Regex("[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef0-9]"), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence([cjk, byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4 + ([extra_corpus] if extra_corpus else []), trainer=trainer)
    tok.add_special_tokens(
        [AddedToken(t, special=t not in VISIBLE_ADDED_TOKENS, normalized=False) for t in SPECIAL_TOKENS]
    )
    return tok


def build_processor(tokenizer_object):
    from transformers import Glm46VImageProcessor, Glm46VProcessor, Glm46VVideoProcessor, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=131072,
    )
    image_processor = Glm46VImageProcessor(
        **{k: v for k, v in IMAGE_PROCESSOR_CONFIG.items() if k != "image_processor_type"}
    )
    video_processor = Glm46VVideoProcessor()
    return Glm46VProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=chat_template(),
    )


def build_config(
    tokenizer,
    *,
    layers: int = 2,
    hidden: int = 128,
    vision_hidden: int = 64,
    vision_depth: int = 2,
    init_std: float = 0.2,
    heads: int = 4,
    intermediate: int | None = None,
    vision_heads: int = 2,
):
    """A small Glm4vConfig. The wide init (0.2 rather than 0.02) makes a random model's greedy
    output depend visibly on the image and the prompt, so equivalence tests compare real choices."""
    from transformers import Glm4vConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = hidden // heads
    rotary_half = head_dim // 4  # partial_rotary_factor 0.5, then half of the rotary dims
    t_section = rotary_half // 4
    h_section = (rotary_half - t_section) // 2
    mrope_section = [t_section, h_section, rotary_half - t_section - h_section]
    stop_ids = [ids[t] for t in STOP_TOKENS]
    return Glm4vConfig(
        architectures=["Glm4vForConditionalGeneration"],
        image_start_token_id=ids["<|begin_of_image|>"],
        image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"],
        video_end_token_id=ids["<|end_of_video|>"],
        image_token_id=ids["<|image|>"],
        video_token_id=ids["<|video|>"],
        tie_word_embeddings=False,
        text_config={
            "model_type": "glm4v_text",
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": intermediate or hidden * 3,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "attention_bias": True,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 32768,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 500000,
                "mrope_section": mrope_section,
                "partial_rotary_factor": 0.5,
            },
            "pad_token_id": ids["<|endoftext|>"],
            "eos_token_id": stop_ids,
            "initializer_range": init_std,
        },
        vision_config={
            "model_type": "glm4v_vision",
            "hidden_size": vision_hidden,
            "depth": vision_depth,
            "num_heads": vision_heads,
            "intermediate_size": vision_hidden * 2,
            "out_hidden_size": hidden,
            "hidden_act": "silu",
            "image_size": 336,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
            "rms_norm_eps": 1e-5,
            "attention_bias": False,
            "initializer_range": init_std,
        },
        initializer_range=init_std,
    )


def glm_generation_config(config):
    """GLM-4.6V-Flash's own generation defaults, for a checkpoint built here."""
    from transformers import GenerationConfig

    from ..backend import DEFAULT_REPETITION_PENALTY, DEFAULT_TEMPERATURE, DEFAULT_TOP_K, DEFAULT_TOP_P

    return GenerationConfig(
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
        do_sample=True,
        temperature=DEFAULT_TEMPERATURE,
        top_p=DEFAULT_TOP_P,
        top_k=DEFAULT_TOP_K,
        repetition_penalty=DEFAULT_REPETITION_PENALTY,
    )


def build_tiny_checkpoint(outdir: str | Path, *, seed: int = 0, layers: int = 2, hidden: int = 128) -> Path:
    """Write the checkpoint to `outdir` and return its path."""
    import torch
    from transformers import Glm4vForConditionalGeneration

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    processor = build_processor(train_tokenizer())
    config = build_config(processor.tokenizer, layers=layers, hidden=hidden)
    torch.manual_seed(seed)
    model = Glm4vForConditionalGeneration(config).eval()
    with torch.no_grad():  # decisive, varied greedy choices (see build_config)
        model.lm_head.weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(seed + 1))
    model.generation_config = glm_generation_config(config)
    model.save_pretrained(outdir)
    processor.save_pretrained(outdir)
    (outdir / "glm_vision_tiny.json").write_text(json.dumps({"seed": seed, "layers": layers, "hidden": hidden}))
    return outdir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args(argv)
    path = build_tiny_checkpoint(args.outdir, seed=args.seed, layers=args.layers, hidden=args.hidden)
    print(f"wrote tiny GLM-4.6V checkpoint to {path}")


if __name__ == "__main__":
    main()


# Where GLM-4.6V-Flash's vocabulary puts the special tokens the engine relies on (its config's
# eos, image and video ids); the slots between them are filled with reserved tokens.
REAL_SPECIAL_IDS = {
    "<|endoftext|>": 151329,
    "[MASK]": 151330,
    "[gMASK]": 151331,
    "[sMASK]": 151332,
    "<sop>": 151333,
    "<eop>": 151334,
    "<|system|>": 151335,
    "<|user|>": 151336,
    "<|assistant|>": 151337,
    "<|observation|>": 151338,
    "<|begin_of_image|>": 151339,
    "<|end_of_image|>": 151340,
    "<|begin_of_video|>": 151341,
    "<|end_of_video|>": 151342,
    "<think>": 151350,
    "</think>": 151351,
    "<|begin_of_box|>": 151357,
    "<|end_of_box|>": 151358,
    "<|image|>": 151363,
    "<|video|>": 151364,
}


def full_vocab_tokenizer():
    """Our BPE, padded so that the special tokens sit at GLM-4.6V-Flash's own ids: the tokenizer
    for random-weight models built from the real config (GPU benchmarks)."""
    from tokenizers import AddedToken, Tokenizer

    data = json.loads(train_tokenizer().to_str())
    data["added_tokens"] = []
    vocab = data["model"]["vocab"]
    for token in SPECIAL_TOKENS:
        vocab.pop(token, None)
    first = min(REAL_SPECIAL_IDS.values())
    for filler in range(len(vocab), first):
        vocab[f"<|filler_{filler}|>"] = filler
    tok = Tokenizer.from_str(json.dumps(data))
    by_id = {v: k for k, v in REAL_SPECIAL_IDS.items()}
    ordered = [by_id.get(i, f"<|reserved_{i}|>") for i in range(first, max(REAL_SPECIAL_IDS.values()) + 1)]
    tok.add_special_tokens([AddedToken(t, special=t not in VISIBLE_ADDED_TOKENS, normalized=False) for t in ordered])
    return tok
