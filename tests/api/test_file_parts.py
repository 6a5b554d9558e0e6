"""PDFs sent the way OpenAI's Chat Completions takes them: a `file` content part with the PDF as `file_data`
(a data: URL). Its pages reach the model exactly as the same PDF sent as an `image_url`; what cannot be served
(a Files API id, raw base64, a file in a system message, a broken PDF) is a 400 that names the field."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image, ImageDraw


def pdf(*labels: str) -> bytes:
    """A PDF with one page per label, each page a different picture (Pillow writes it, pypdfium2 reads it)."""
    pages = []
    for index, label in enumerate(labels):
        page = Image.new("RGB", (240, 160), (255 - 60 * index, 255, 200))
        ImageDraw.Draw(page).text((20, 60), label, fill="black")
        pages.append(page)
    buffer = io.BytesIO()
    pages[0].save(buffer, format="PDF", save_all=True, append_images=pages[1:])
    return buffer.getvalue()


def pdf_url(data: bytes) -> str:
    return "data:application/pdf;base64," + base64.b64encode(data).decode()


def file_part(**file) -> dict:
    return {"type": "file", "file": file}


def ask(server, part: dict, role: str = "user") -> httpx.Response:
    messages = [{"role": role, "content": [part, {"type": "text", "text": "What do the pages say?"}]}]
    if role != "user":
        messages.append({"role": "user", "content": "and?"})
    body = {"messages": messages, "max_tokens": 2, "temperature": 0}
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)


def test_a_pdf_file_part_reads_like_the_same_pdf_as_an_image_url(server, recorded):
    two_pages = pdf("page one", "page two")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    as_file = client.chat.completions.create(
        model="glm-vision",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "file", "file": {"filename": "report.pdf", "file_data": pdf_url(two_pages)}},
                    {"type": "text", "text": "What do the pages say?"},
                ],
            }
        ],
        max_tokens=2,
        temperature=0,
    )
    sent = recorded.handles[-1].request.messages[0].images
    as_image_url = ask(server, {"type": "image_url", "image_url": {"url": pdf_url(two_pages)}})
    one_page = ask(server, file_part(file_data=pdf_url(pdf("page one"))))
    assert as_image_url.status_code == one_page.status_code == 200, (as_image_url.text, one_page.text)
    assert len(sent) == 2 and sent[0].image.tobytes() != sent[1].image.tobytes()  # both pages, each its own
    assert as_file.usage.prompt_tokens == as_image_url.json()["usage"]["prompt_tokens"]
    assert as_file.usage.prompt_tokens > one_page.json()["usage"]["prompt_tokens"]


@pytest.mark.parametrize(
    ("part", "role", "phrase", "param"),
    [
        (file_part(file_id="file-abc123"), "user", "does not have", "messages.0.content.0.file.file_id"),
        (
            file_part(file_data=base64.b64encode(pdf("x")).decode()),
            "user",
            "data: URL",
            "messages.0.content.0.file.file_data",
        ),
        (file_part(filename="report.pdf"), "user", "send the PDF as file_data", "messages.0.content.0.file"),
        ({"type": "file"}, "user", "needs its 'file' field", "messages.0.content.0"),
        (file_part(file_data=7), "user", "valid string", "messages.0.content.0.file.file_data"),
        (file_part(file_data=pdf_url(b"%PDF-1.4 broken")), "user", "PDF", "messages.0.content.0"),
        (file_part(file_data=pdf_url(pdf("x"))), "system", "only user and tool messages", "messages.0.content.0"),
    ],
    ids=["file_id", "raw base64", "no data", "no file", "not a string", "broken pdf", "in a system message"],
)
def test_what_a_file_part_cannot_be_is_a_400_naming_the_field(server, recorded, part, role, phrase, param):
    before = len(recorded.handles)
    response = ask(server, part, role)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert phrase in error["message"] and error["param"] == param, error
    assert len(recorded.handles) == before  # refused before anything reached the engine
