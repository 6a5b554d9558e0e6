"""Draws the example images of the web UI's gallery (run once: python assets/examples/make_examples.py).

Flat, screenshot-like pictures made by the project itself: coloured shapes at clear positions and
short words, with simple questions about colour, shape, position, count and text.
"""

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent


def font(size):
    for name in ("DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def canvas(color=(245, 245, 245), size=(448, 336)):
    image = Image.new("RGB", size, color)
    return image, ImageDraw.Draw(image)


def main():
    items = []

    image, draw = canvas()
    draw.ellipse((48, 88, 208, 248), fill=(220, 30, 30))
    draw.rectangle((256, 88, 416, 248), fill=(30, 80, 220))
    image.save(HERE / "shapes.png")
    items.append({"image": "shapes.png", "question": "What colour is the circle, and which side of the picture is it on?",
                  "question_zh": "圆形是什么颜色？它在图片的哪一侧？"})

    image, draw = canvas((255, 255, 255))
    for x in (40, 150, 260, 370):
        draw.ellipse((x - 30 + 20, 138, x + 30 + 20, 198), fill=(40, 170, 70))
    image.save(HERE / "count.png")
    items.append({"image": "count.png", "question": "How many green dots are there?", "question_zh": "图中有几个绿色圆点？"})

    image, draw = canvas((30, 34, 42))
    draw.rounded_rectangle((64, 120, 384, 216), radius=18, fill=(37, 99, 235))
    draw.text((224, 168), "SAVE", font=font(48), fill=(255, 255, 255), anchor="mm")
    image.save(HERE / "button.png")
    items.append({"image": "button.png", "question": "What word is written on the button?", "question_zh": "按钮上写的是什么词？"})

    image, draw = canvas((255, 250, 230))
    draw.polygon([(224, 40), (124, 200), (324, 200)], fill=(250, 200, 0))
    draw.rectangle((184, 240, 264, 300), fill=(120, 60, 160))
    image.save(HERE / "stack.png")
    items.append({"image": "stack.png", "question": "Which shape is at the top, and what colour is the square below it?",
                  "question_zh": "最上面是什么形状？它下面的正方形是什么颜色？"})

    image, draw = canvas((255, 255, 255))
    draw.text((224, 100), "HELLO", font=font(64), fill=(0, 0, 0), anchor="mm")
    draw.text((224, 220), "WORLD", font=font(56), fill=(200, 0, 0), anchor="mm")
    image.save(HERE / "words.png")
    items.append({"image": "words.png", "question": "Read the text in the picture.", "question_zh": "读出图片中的文字。"})

    (HERE / "examples.json").write_text(json.dumps(items, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
