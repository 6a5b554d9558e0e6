"""Grounding in GLM's answers: the boxes and points it writes, found in the answer text, tied to the
image they are about and converted to that image's pixels.

GLM-4.1V / 4.5V / 4.6V write positions in thousandths of the image's width and height (0-1000, the
origin top left), whatever size the processor resized the image to: a box is `[x1,y1,x2,y2]`, a
point `[x,y]`. The answer usually marks them with `<|begin_of_box|>...<|end_of_box|>`, and the
bracket style varies (`[..]`, `[[..]]`, `(..)`, `<..>`, lists of several boxes); detection answers
are JSON objects `{"label": "cat", "bbox_2d": [..]}` / `{"point_2d": [..]}`, often in a ```json
fence. An upstream server that decodes with `skip_special_tokens` drops the box markers, so the
answer is read with and without them:

- inside box markers: every bracket style, commas or spaces, integers or decimals;
- anywhere (prose or code): JSON objects with a `bbox_2d` / `point_2d` key;
- in prose outside markers (not in code or math): square-bracketed integers, 4 (a box) or 2 (a point).

Malformed text never raises: what cannot be read is not a box. Coordinates are clamped to 0-1000
and a box's corners put in order.

Which image: the image the question is about, that is the last image of the user (or tool) turn the
answer replies to (the last image of the conversation when that turn has none), unless the answer
names another ("image 2", "page 2", "图2", `{"image": 2, ...}`; numbered from 1 among that turn's
images, or among all the conversation's images when the turn has none).

Spans and texts refer to the answer as displayed: `split_output(text).answer`, box markers removed.

The package: `marks` (what an answer wrote and what it means in pixels), `parsing` (finding them in
the text), `resolving` (tying them to the conversation's images), `stream` (as the answer streams in).
"""

from .marks import BOX, POINT, SCALE, Annotation, Grounding, ImageSlot, to_pixels
from .parsing import answer_layout, find_groundings
from .resolving import annotate_answer, reply_images, resolve
from .stream import GroundingStream

__all__ = [
    "BOX",
    "POINT",
    "SCALE",
    "Annotation",
    "Grounding",
    "GroundingStream",
    "ImageSlot",
    "annotate_answer",
    "answer_layout",
    "find_groundings",
    "reply_images",
    "resolve",
    "to_pixels",
]
