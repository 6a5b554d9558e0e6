"""The question phrasings of the demo model's synthetic data, per question kind and language.

`Q_EN` / `Q_ZH` are the TRAIN templates; `HELDOUT_EN` / `HELDOUT_ZH` are never trained on (nor seen
by the tokenizer's corpus, so their words split into pieces the model knows): the evaluation's
paraphrase set asks with them. `{s}` is the shape's name, `{c}` its colour; the first template of
every list has no `{c}` (it is the fallback when the shape asked about is not in the picture). The
first train template of each kind is the gallery's question (`assets/examples/make_examples.py`).
"""

from __future__ import annotations

Q_EN = {
    "describe": [
        "Describe the image.",
        "What is in this image?",
        "Describe this picture.",
        "What do you see?",
        "What's in the picture?",
        "Tell me what this image shows.",
        "Can you describe what you see?",
    ],
    "shapes": [
        "Which shapes are in the image?",
        "What shapes do you see?",
        "Which shapes are there?",
        "List the shapes.",
        "What shape is in the image?",
        "Which shapes are in the picture?",
        "What shapes are shown?",
        "Name the shapes in the image.",
        "What kinds of shapes can you see?",
    ],
    "count": [
        "How many shapes are there?",
        "How many objects are in the picture?",
        "Count the shapes.",
        "How many shapes do you see?",
        "How many shapes are in the image?",
        "What is the number of shapes?",
        "How many figures are there?",
    ],
    "word": [
        "What word is written?",
        "What does the text say?",
        "Read the word in the image.",
        "What is written in the image?",
        "What text is shown?",
        "Which word appears in the picture?",
        "What does it say?",
        "Read the text.",
    ],
    "color": [
        "What color is the {s}?",
        "What colour is the {s}?",
        "Which color is the {s}?",
        "What is the color of the {s}?",
        "What colour is the {s} in the picture?",
        "Tell me the color of the {s}.",
        "The {s} is which color?",
        "What color does the {s} have?",
    ],
    "position": [
        "Where is the {s}?",
        "Where is the {c} {s}?",
        "Where is the {s} located?",
        "In which part of the image is the {s}?",
        "Where's the {s}?",
        "Where can I find the {s}?",
        "Where is the {s} in the picture?",
        "Where in the image is the {c} {s}?",
    ],
    "box": [
        "Box the {s}.",
        "Box the {c} {s}.",
        "Draw a box around the {s}.",
        "Give the bounding box of the {s}.",
        "Mark the {c} {s} with a box.",
        "Find the {s} and box it.",
        "Locate the {s} with a bounding box.",
        "Where is the {s}? Answer with a box.",
    ],
}
Q_ZH = {
    "describe": [
        "请描述这张图片。",
        "图片里有什么？",
        "描述一下这张图。",
        "这张图里有什么东西？",
        "说说你看到了什么。",
    ],
    "shapes": [
        "图中有哪些形状？",
        "图片里有什么形状？",
        "有哪些图形？",
        "图里是什么形状？",
        "列出图中的形状。",
        "图片中画了哪些形状？",
    ],
    "count": [
        "图中有几个形状？",
        "有多少个图形？",
        "数一数有几个形状。",
        "图片里一共有几个形状？",
        "形状的数量是多少？",
    ],
    "word": ["图中写的是什么字？", "上面写着什么？", "图片里的文字是什么？", "图中有什么文字？", "读一下图中的单词。"],
    "color": [
        "{s}是什么颜色？",
        "{s}是什么颜色的？",
        "图中{s}的颜色是什么？",
        "{s}的颜色是？",
        "图片里的{s}是什么颜色？",
    ],
    "position": ["{s}在哪里？", "{c}的{s}在哪里？", "{s}在图片的什么位置？", "{s}在哪儿？", "{s}位于图中哪个位置？"],
    "box": [
        "框出{s}。",
        "框出{c}{s}。",
        "用框标出{s}。",
        "给出{s}的边界框。",
        "把{c}的{s}框出来。",
        "请框出图中的{s}。",
    ],
}
HELDOUT_EN = {
    "describe": ["Give me a description of this image.", "What does this picture contain?"],
    "shapes": [
        "Which geometric figures appear here?",
        "What shapes does this picture contain?",
        "Tell me the shapes you can see.",
    ],
    "count": [
        "Count the objects in this picture.",
        "How many things are drawn here?",
        "Tell me how many shapes there are.",
    ],
    "word": ["Can you read the word for me?", "What is the word in this picture?", "Which word is written here?"],
    "color": [
        "Which colour does the {s} have?",
        "Can you tell me what color the {s} is?",
        "What is the {s}'s color?",
    ],
    "position": [
        "Tell me where the {s} is.",
        "Can you tell me where the {c} {s} is?",
        "What is the location of the {s}?",
    ],
    "box": ["Put a box around the {s}.", "Show me the bounding box of the {c} {s}.", "Outline the {s} with a box."],
}
HELDOUT_ZH = {
    "describe": ["给我讲讲这张图片。", "这幅图画了什么？"],
    "shapes": ["这张图里能看到哪些图形？", "说出图中的所有形状。", "图上都有什么形状？"],
    "count": ["这张图里有多少个图形？", "请数一下图中的形状。", "一共画了几个形状？"],
    "word": ["这张图上写了什么？", "请读出图片里的字。", "图里的单词是什么？"],
    "color": ["告诉我{s}的颜色。", "{s}是哪种颜色？", "请问{s}是什么颜色？"],
    "position": ["告诉我{s}在哪里。", "{s}在图的哪个部分？", "请问{c}的{s}在什么地方？"],
    "box": ["圈出{s}的位置。", "画一个框标出{c}{s}。", "{s}的框是多少？"],
}


def templates(kind: str, lang: str, heldout: bool = False) -> list[str]:
    table = (HELDOUT_EN if lang == "en" else HELDOUT_ZH) if heldout else (Q_EN if lang == "en" else Q_ZH)
    return table[kind]
