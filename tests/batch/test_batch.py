"""The batch CLI end to end, as a user runs it: `python -m glm_vision.batch` in a subprocess, on the
tiny checkpoint locally and against a running app with --api-base; JSONL and CSV; resume; a corrupt
image recorded, not fatal."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from glm_vision.batch.results import FIELDS
from glm_vision.server import AppState
from tests.api_helpers import RecordingBackend, serve
from tests.conftest import make_picture

ROOT = Path(__file__).resolve().parents[2]


def run_batch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "glm_vision.batch", "--quiet", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def folder(tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    make_picture(61).save(shots / "a.png")
    make_picture(62).convert("RGB").save(shots / "b.jpg")
    make_picture(63).save(shots / "c.webp")
    (shots / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (shots / "notes.txt").write_text("not an image")
    return shots


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_local_jsonl_with_bad_image_then_resume(folder, tmp_path, tiny_model_dir):
    out = tmp_path / "results.jsonl"
    common = [
        "--input",
        str(folder),
        "--prompt",
        "What is shown?",
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
    ]
    first = run_batch(*common)
    assert first.returncode == 0, first.stderr
    records = read_jsonl(out)
    assert sorted(Path(r["image"]).name for r in records) == ["a.png", "b.jpg", "broken.png", "c.webp"]
    by_name = {Path(r["image"]).name: r for r in records}
    assert "bad image" in by_name["broken.png"]["error"]
    assert by_name["broken.png"]["prompt_tokens"] is None and by_name["broken.png"]["ttft_s"] is None
    assert {r["prompt"] for r in records} == {"What is shown?"} and len({r["run"] for r in records}) == 1
    for name in ("a.png", "b.jpg", "c.webp"):
        record = by_name[name]
        assert record["error"] == ""
        assert set(record) == set(FIELDS)
        assert 1 <= record["completion_tokens"] <= 4 and record["prompt_tokens"] > 20
        assert record["seconds"] > 0 and record["finish_reason"] in {"stop", "length"}
    assert "3 answered, 1 failed" in first.stderr

    # An interrupted run: two records kept, the third cut mid-line.
    lines = out.read_text().splitlines()
    out.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:15])
    second = run_batch(*common)
    assert second.returncode == 0, second.stderr
    assert "resuming: 2 of 4 images" in second.stderr
    records = read_jsonl_tolerant(out)
    assert sorted(Path(r["image"]).name for r in records) == ["a.png", "b.jpg", "broken.png", "c.webp"]

    # Nothing left to do; --retry-errors redoes only the failed image, leaving one record for it.
    third = run_batch(*common)
    assert third.returncode == 0 and "nothing to do" in third.stderr
    fourth = run_batch(*common, "--retry-errors")
    assert fourth.returncode == 0, fourth.stderr
    assert "resuming: 3 of 4 images" in fourth.stderr
    records = read_jsonl(out)
    assert sorted(Path(r["image"]).name for r in records) == ["a.png", "b.jpg", "broken.png", "c.webp"]


def test_resume_refuses_a_file_of_another_question(folder, tmp_path):
    out = tmp_path / "r.jsonl"
    record = {name: None for name in FIELDS} | {
        "image": str(folder / "a.png"),
        "answer": "3",
        "error": "",
        "prompt": "How many shapes?",
        "run": "0123456789abcdef",
    }
    out.write_text(json.dumps(record) + "\n")
    other = run_batch(
        "--input",
        str(folder),
        "--prompt",
        "What colour is the star?",
        "--out",
        str(out),
        "--api-base",
        "http://127.0.0.1:9/v1",
    )
    assert other.returncode == 2
    assert "another question" in other.stderr and "How many shapes?" in other.stderr and "--overwrite" in other.stderr
    assert read_jsonl(out) == [record]  # nothing lost


def test_unknown_out_extension_is_refused(folder, tmp_path):
    result = run_batch("--input", str(folder), "--prompt", "x", "--out", str(tmp_path / "r.xlsx"))
    assert result.returncode == 2 and "unknown extension '.xlsx'" in result.stderr and ".jsonl or .csv" in result.stderr
    assert not (tmp_path / "r.xlsx").exists()


def read_jsonl_tolerant(path: Path) -> list[dict]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def test_csv_against_a_running_server_with_glob(folder, tmp_path, settings, engine):
    recorded = RecordingBackend(engine)
    live = serve(AppState(settings, backend=recorded))
    try:
        out = tmp_path / "out" / "results.csv"
        prompt_file = tmp_path / "q.txt"
        prompt_file.write_text("Describe the picture.\n")
        args = [
            "--input",
            str(folder / "*.*"),
            "--prompt-file",
            str(prompt_file),
            "--out",
            str(out),
            "--api-base",
            live.url + "/v1",
            "--concurrency",
            "2",
            "--max-tokens",
            "3",
            "--no-thinking",
        ]
        result = run_batch(*args)
        assert result.returncode == 0, result.stderr
        with out.open(newline="") as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames == FIELDS
            rows = list(reader)
        assert sorted(Path(r["image"]).name for r in rows) == ["a.png", "b.jpg", "broken.png", "c.webp"]
        answered = [r for r in rows if not r["error"]]
        assert len(answered) == 3 and all(int(r["completion_tokens"]) >= 1 for r in answered)
        assert "bad image" in next(r for r in rows if r["image"].endswith("broken.png"))["error"]
        # The server saw three requests, each with the prompt file's text, one image and thinking off.
        assert len(recorded.handles) == 3
        for handle in recorded.handles:
            message = handle.request.messages[-1]
            assert message.text == "Describe the picture." and len(message.images) == 1
            assert handle.request.enable_thinking is False

        again = run_batch(*args)
        assert again.returncode == 0 and "nothing to do" in again.stderr
        assert len(recorded.handles) == 3
    finally:
        live.__exit__()


def test_usage_errors(tmp_path):
    missing = run_batch("--input", str(tmp_path / "nowhere"), "--prompt", "x", "--out", str(tmp_path / "r.jsonl"))
    assert missing.returncode == 2 and "no images found" in missing.stderr
    neither = run_batch("--input", str(tmp_path), "--out", str(tmp_path / "r.jsonl"))
    assert neither.returncode == 2 and "--prompt" in neither.stderr


def test_unreachable_server_exits_3(folder, tmp_path):
    from tests.api_helpers import free_port

    result = run_batch(
        "--input",
        str(folder),
        "--prompt",
        "x",
        "--out",
        str(tmp_path / "r.jsonl"),
        "--api-base",
        f"http://127.0.0.1:{free_port()}/v1",
    )
    assert result.returncode == 3 and "cannot reach" in result.stderr


# ---------------------------------------------------------------------------------- answers a program reads
SCHEMA = {
    "type": "object",
    "properties": {
        "shape": {"enum": ["circle", "square"]},
        "where": {
            "type": "object",
            "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9}},
            "required": ["x"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
    },
    "required": ["shape", "where", "tags"],
    "additionalProperties": False,
}


def test_json_schema_records_carry_the_parsed_object_and_csv_flattens_it(folder, tmp_path, tiny_model_dir):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    common = [
        "--input",
        str(folder / "*.png"),
        "--input",
        str(folder / "*.jpg"),
        "--prompt",
        "Describe",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--max-tokens",
        "80",
        "--json-schema",
        str(schema),
        "--no-thinking",
    ]
    out = tmp_path / "r.jsonl"
    assert run_batch(*common, "--out", str(out)).returncode == 0
    records = [r for r in read_jsonl(out) if not r["error"]]
    assert len(records) == 2
    for record in records:
        assert record["finish_reason"] == "stop" and record["parsed"] == json.loads(record["answer"])
        assert record["parsed"]["shape"] in ("circle", "square") and "json.shape" not in record
    table = tmp_path / "r.csv"
    assert run_batch(*common, "--out", str(table)).returncode == 0
    with table.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r["error"]]
    assert list(rows[0])[-3:] == ["json.shape", "json.where.x", "json.tags"]
    for row in rows:
        parsed = json.loads(row["answer"])
        assert row["json.shape"] == parsed["shape"] and int(row["json.where.x"]) == parsed["where"]["x"]
        assert json.loads(row["json.tags"]) == parsed["tags"]


def test_choices_with_probabilities_and_thinking_budget(folder, tmp_path, tiny_model_dir, settings, engine):
    out = tmp_path / "m.csv"
    server = serve(AppState(settings, backend=engine))  # through --api-base: logprobs come back over the API
    try:
        done = run_batch(
            "--input",
            str(folder / "*.png"),
            "--prompt",
            "Is it safe?",
            "--out",
            str(out),
            "--api-base",
            server.url + "/v1",
            "--choices",
            "yes,no",
            "--thinking-budget",
            "3",
            "--max-tokens",
            "30",
        )
    finally:
        server.__exit__()
    assert done.returncode == 0, done.stderr
    with out.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r["error"]]
    assert rows
    for row in rows:
        assert row["answer"] in ("yes", "no") and row["finish_reason"] == "stop"
        assert abs(float(row["p_yes"]) + float(row["p_no"]) - 1) < 1e-4
        assert 0 < len(row["reasoning"]) and len(row["reasoning"]) <= 3 * 8  # at most 3 tokens of reasoning


def test_bad_schema_or_choices_are_usage_errors(folder, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": 7}')
    for extra in (["--json-schema", str(bad)], ["--choices", "yes"], ["--choices", "a,,b"]):
        done = run_batch("--input", str(folder), "--prompt", "x", "--out", str(tmp_path / "o.jsonl"), *extra)
        assert done.returncode == 2 and "error:" in done.stderr


def test_choice_probabilities_from_the_first_answer_token():
    from glm_vision.backend import TokenLogprob, TopLogprob
    from glm_vision.batch.formats import choice_probabilities

    think = TokenLogprob("</think>", -0.1)
    newline = TokenLogprob("\n", -0.2)
    first = TokenLogprob("y", -0.5, top=(TopLogprob("y", -0.5), TopLogprob("n", -1.5), TopLogprob("maybe", -0.1)))
    probs = choice_probabilities([TokenLogprob("hm", -1), think, newline, first, TokenLogprob("es", 0)], ("yes", "no"))
    import math

    assert probs["yes"] == pytest.approx(math.exp(-0.5) / (math.exp(-0.5) + math.exp(-1.5)))
    assert choice_probabilities([], ("yes", "no")) is None
