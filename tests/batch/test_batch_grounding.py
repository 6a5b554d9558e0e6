"""Batch records carry the answer's boxes with pixel coordinates of each input image (JSON text in
CSV), and --annotate DIR writes each image with its boxes drawn: a scripted answer with two labelled
boxes, asked through --api-base of a running app."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from glm_vision.annotate import colour
from glm_vision.server import AppState
from tests.api_helpers import ScriptedBackend, serve
from tests.batch.test_batch import read_jsonl, run_batch

B, E = "<|begin_of_box|>", "<|end_of_box|>"
ANSWER = f"<think>two buttons</think>\nSubmit: {B}[[100,200,300,400]]{E}\nCancel: {B}[[333,667,999,1000]]{E}"
# x * width / 1000, y * height / 1000, rounded half up
PIXELS = {
    "screen.png": [[192, 216, 576, 432], [639, 720, 1918, 1080]],  # 1920x1080
    "phone.jpg": [[108, 480, 324, 960], [360, 1601, 1079, 2400]],
}  # 1080x2400


@pytest.fixture(scope="module")
def server(settings):
    backend = ScriptedBackend(ANSWER)
    live = serve(AppState(settings, backend=backend))
    yield live
    live.__exit__()
    backend.shutdown()


@pytest.fixture
def shots(tmp_path):
    folder = tmp_path / "shots"
    (folder / "phones").mkdir(parents=True)
    Image.new("RGB", (1920, 1080), "white").save(folder / "screen.png")
    Image.new("RGB", (1080, 2400), "white").save(folder / "phones" / "phone.jpg", quality=95)
    return folder


def test_records_carry_pixel_coordinates_and_annotate_draws_them(server, shots, tmp_path):
    out, drawn = tmp_path / "r.jsonl", tmp_path / "drawn"
    done = run_batch(
        "--input",
        str(shots),
        "--recursive",
        "--prompt",
        "Where are the buttons?",
        "--out",
        str(out),
        "--api-base",
        server.url + "/v1",
        "--annotate",
        str(drawn),
    )
    assert done.returncode == 0, done.stderr
    records = {Path(r["image"]).name: r for r in read_jsonl(out)}
    for name, pixels in PIXELS.items():
        grounding = records[name]["grounding"]
        assert [(g["label"], g["coords"], g["pixels"], g["image_index"]) for g in grounding] == [
            ("Submit", [100, 200, 300, 400], pixels[0], 0),
            ("Cancel", [333, 667, 999, 1000], pixels[1], 0),
        ]
    # the drawings mirror the inputs' paths, as PNG, each box in its colour at its pixels
    screen, phone = Image.open(drawn / "screen.png"), Image.open(drawn / "phones" / "phone.jpg.png")
    assert screen.size == (1920, 1080) and phone.size == (1080, 2400)
    first, second = (Image.new("RGB", (1, 1), colour(n)).getpixel((0, 0)) for n in (1, 2))
    assert screen.getpixel((192, 300)) == first and screen.getpixel((1200, 1079)) == second
    assert phone.getpixel((200, 480)) == first and phone.getpixel((360, 2000)) == second
    assert screen.getpixel((400, 300)) == (255, 255, 255)


def test_csv_has_the_grounding_as_json_text(server, shots, tmp_path):
    out = tmp_path / "r.csv"
    done = run_batch(
        "--input", str(shots / "*.png"), "--prompt", "Where?", "--out", str(out), "--api-base", server.url + "/v1"
    )
    assert done.returncode == 0, done.stderr
    with out.open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert [g["pixels"] for g in json.loads(row["grounding"])] == PIXELS["screen.png"]


def test_a_resumed_csv_keeps_its_header(server, shots, tmp_path):
    """A results file written before the grounding column existed: new rows follow its header."""
    out = tmp_path / "old.csv"
    common = [
        "--input",
        str(shots / "*.png"),
        "--input",
        str(shots / "phones" / "*.jpg"),
        "--prompt",
        "Where?",
        "--out",
        str(out),
        "--api-base",
        server.url + "/v1",
    ]
    assert run_batch(*common).returncode == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    old_columns = [c for c in rows[0] if c != "grounding"]
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerow(rows[0])
    assert run_batch(*common).returncode == 0
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == old_columns
        resumed = list(reader)
    assert len(resumed) == 2 and all(None not in row for row in resumed)  # no overflowing cells
