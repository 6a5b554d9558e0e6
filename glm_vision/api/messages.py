"""OpenAI chat messages -> the engine's messages: text parts, image parts (data: URLs, and http(s)
URLs only from allowed hosts when enabled), with every problem answered as a 400 that names the part."""

from __future__ import annotations

import base64
import binascii
import json
import re

from pydantic import ValidationError

from ..conversation import IMAGE_ROLES, Message, split_output
from ..images import ImageError, InputImage, load_media
from ..tool_calls import ToolCall
from .decoding import decode_in_thread
from .errors import APIError
from .remote_images import fetch_remote_image
from .schemas import ChatMessage, FilePart, ImagePart, TextPart

LOW_DETAIL_IMAGE_TOKENS = 1024

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Lone UTF-16 surrogates (legal as JSON escapes, not as Unicode) become U+FFFD; valid pairs were
    already joined by the JSON parser."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _text_of(content, where: str, *, allow_images: bool) -> tuple[str, list[tuple[str, ImagePart | FilePart]]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for index, part in enumerate(content):
        param = f"{where}.content.{index}"
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ImagePart | FilePart):
            if not allow_images:
                raise APIError(400, f"{param}: only user and tool messages can carry images and files", param=param)
            images.append((param, part))
        elif part.type in {"text", "image_url", "file"}:
            raise _malformed_part(part, param)
        else:
            raise APIError(
                400,
                f"{param}: content parts of type '{part.type}' are not supported; send 'text', 'image_url' and "
                "'file' (PDF) parts",
                param=param,
            )
    return "\n".join(texts), images


def _malformed_part(part, param: str) -> APIError:
    """A text, image or file part its own model refused (the union then took it as an unknown type): the field at
    fault."""
    model = {"text": TextPart, "image_url": ImagePart, "file": FilePart}[part.type]
    try:
        model.model_validate(part.model_dump())
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] != "missing" or len(error["loc"]) > 1:
            where = ".".join([param, *map(str, error["loc"])])
            return APIError(400, f"{where}: {error['msg']}", param=where)
    return APIError(400, f"{param}: a '{part.type}' part needs its '{part.type}' field", param=param)


async def convert_messages(messages: list[ChatMessage], settings) -> tuple[list[Message], bool]:
    """OpenAI messages -> engine messages (images decoded); also whether any image asked for low detail."""
    converted: list[Message] = []
    low_detail = False
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if message.role == "function":
            raise APIError(
                400,
                f"{where}: 'function' messages are the old API; send 'tool' messages with a tool_call_id",
                param=f"{where}.role",
            )
        text, parts = _text_of(message.content, where, allow_images=message.role in IMAGE_ROLES)
        text = clean_text(text)
        if message.role in {"system", "developer"}:
            converted.append(Message("system", text))
        elif message.role == "assistant":
            converted.append(assistant_message(message, text, where))
        else:
            images, low = await _images_of(parts, where, settings)
            low_detail = low_detail or low
            converted.append(user_or_tool_message(message, text, images, where))
    return converted, low_detail


def assistant_message(message: ChatMessage, text: str, where: str) -> Message:
    """Reasoning is never sent back to the model, whatever the client kept; calls keep their ids."""
    calls = []
    for number, call in enumerate(message.tool_calls or []):
        param = f"{where}.tool_calls.{number}.function.arguments"
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise APIError(
                400,
                f'{param}: the arguments must be a JSON object in a string, e.g. \'{{"city": "Paris"}}\'',
                param=param,
            )
        calls.append(ToolCall(call.function.name, arguments, call.id))
    return Message("assistant", split_output(text).raw_answer, tool_calls=calls)


def user_or_tool_message(message: ChatMessage, text: str, images: list[InputImage], where: str) -> Message:
    if message.role == "tool":
        if not message.tool_call_id:
            raise APIError(
                400,
                f"{where}.tool_call_id: a tool message needs the id of the call it answers",
                param=f"{where}.tool_call_id",
            )
        return Message("tool", text, images, tool_call_id=message.tool_call_id)
    if not text.strip() and not images:
        raise APIError(
            400,
            f"{where}: the user message is empty; send text, an image or both",
            param=f"{where}.content",
            code="empty_message",
        )
    return Message("user", text, images)


async def _images_of(parts, where: str, settings) -> tuple[list[InputImage], bool]:
    """A message's image parts decoded, within the per-message limit; and whether one asked for low detail."""
    limit = settings.max_images_per_message
    if len(parts) > limit:  # refused before decoding any of them
        raise APIError(
            400,
            f"{where}: {len(parts)} images in one message; at most {limit} images (PDF pages "
            "included) per message are accepted",
            param=f"{where}.content",
            code="too_many_images",
        )
    images: list[InputImage] = []
    for param, part in parts:
        images.extend(await load_image_part(_media_url(part, param), param, settings))
    if len(images) > limit:
        raise APIError(
            400,
            f"{where}: {len(images)} images in one message (PDF pages included); at most {limit} are accepted",
            param=f"{where}.content",
            code="too_many_images",
        )
    return images, any(isinstance(part, ImagePart) and part.image_url.detail == "low" for _, part in parts)


def _media_url(part: ImagePart | FilePart, param: str) -> str:
    if isinstance(part, ImagePart):
        return part.image_url.url
    file = part.file
    if file.file_data is not None:
        if not file.file_data.startswith("data:"):
            raise APIError(
                400,
                f"{param}.file.file_data: send the file as a data: URL (data:application/pdf;base64,...)",
                param=f"{param}.file.file_data",
            )
        return file.file_data
    if file.file_id is not None:
        raise APIError(
            400,
            f"{param}.file.file_id: file ids name files uploaded to OpenAI's Files API, which this server does not "
            "have; send the PDF itself as file_data (data:application/pdf;base64,...)",
            param=f"{param}.file.file_id",
        )
    raise APIError(
        400, f"{param}.file: send the PDF as file_data (data:application/pdf;base64,...)", param=f"{param}.file"
    )


async def load_image_part(url: str, param: str, settings) -> list[InputImage]:
    max_bytes = settings.max_upload_bytes
    if url.startswith("data:"):
        data = decode_data_url(url, param, max_bytes)
    elif url.startswith(("http://", "https://")):
        data = await fetch_remote_image(url, param, settings)
    else:
        raise APIError(
            400,
            f"{param}: image URLs must be data: URLs (data:image/png;base64,...) or http(s) URLs",
            param=param,
            code="invalid_image_url",
        )
    try:
        return await decode_in_thread(
            load_media, data, max_bytes=None, max_pages=settings.pdf_max_pages, pdf_dpi=settings.pdf_dpi
        )
    except ImageError as exc:
        raise APIError(400, f"{param}: {exc}", param=param, code="invalid_image") from None


def decode_data_url(url: str, param: str, max_bytes: int) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma:
        raise APIError(
            400, f"{param}: malformed data: URL (no comma before the data)", param=param, code="invalid_image_url"
        )
    if not header.endswith(";base64"):
        raise APIError(
            400,
            f"{param}: data: URLs must be base64-encoded (data:image/png;base64,...)",
            param=param,
            code="invalid_image_url",
        )
    payload = payload.strip()
    estimated = len(payload) * 3 // 4
    if estimated > max_bytes + 3:
        raise APIError(
            413,
            f"{param}: the image is {estimated / 1e6:.1f} MB; images up to {max_bytes / 1e6:.1f} MB are accepted",
            param=param,
            code="image_too_large",
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        try:  # tolerate URL-safe alphabets and missing padding
            data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            raise APIError(
                400, f"{param}: the data: URL is not valid base64", param=param, code="invalid_image_url"
            ) from None
    if len(data) > max_bytes:
        raise APIError(
            413,
            f"{param}: the image is {len(data) / 1e6:.1f} MB; images up to {max_bytes / 1e6:.1f} MB are accepted",
            param=param,
            code="image_too_large",
        )
    return data
