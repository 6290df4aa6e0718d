"""Reading the `input` of a `responses.create` call the way MKA1 does: a string, or a
list of messages whose content is a string or parts (`input_text`, `input_image`,
`input_file`). Images and files come inline as base64 / data URIs, or by the `file_id`
of one of the caller's uploaded files."""

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from multichannel.sandbox.models import SandboxFile

ROLES = ("user", "assistant", "system", "developer")
IMAGE_DETAILS = ("high", "low", "auto", "original")
DATA_URI_RE = re.compile(
    r"^data:(?P<mime>[-\w.+]+/[-\w.+]+)(?:;[-\w.+]+=[-\w.+\"]+)*;base64,(?P<data>[A-Za-z0-9+/]*={0,2})$"
)


class InputError(Exception):
    """The input is malformed (400), or names a file that is not the caller's (404)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class TurnInput:
    texts: list[str] = field(default_factory=list)
    # What the answer describes, in the order given: ("image", size, "") or
    # ("file", size, filename).
    media: list[tuple[str, int, str]] = field(default_factory=list)
    # (role, content parts) per input message, as the conversation keeps them.
    messages: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.texts)


def _decoded(value: str, what: str, *, bare_base64: bool) -> bytes:
    match = DATA_URI_RE.match(value)
    if match is not None:
        payload = match["data"]
    elif bare_base64 and not value.startswith("data:"):
        payload = value
    else:
        raise InputError(f"{what} must be a base64 data URI (data:<mime>;base64,...)")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{what} is not valid base64") from exc
    if not data:
        raise InputError(f"{what} is empty")
    return data


def _owned_file(file_id: Any, owner: dict[str, str]) -> SandboxFile:
    if not isinstance(file_id, str) or not file_id:
        raise InputError("file_id must be a non-empty string")
    found = SandboxFile.objects.filter(id=file_id, **owner).defer("data").first()
    if found is None:
        raise InputError(f"File {file_id} not found", status=404)
    return found


def _one_source(part: dict[str, Any], kind: str, sources: tuple[str, ...]) -> str:
    given = [name for name in sources if part.get(name) is not None]
    if len(given) != 1:
        raise InputError(f"{kind} needs exactly one of {', '.join(sources)}")
    return given[0]


def _image(part: dict[str, Any], turn: TurnInput, owner: dict[str, str]) -> None:
    if part.get("detail") is not None and part["detail"] not in IMAGE_DETAILS:
        raise InputError(f"input_image.detail must be one of {', '.join(IMAGE_DETAILS)}")
    if _one_source(part, "input_image", ("image_url", "file_id")) == "file_id":
        turn.media.append(("image", _owned_file(part["file_id"], owner).size, ""))
        return
    url = part["image_url"]
    if not isinstance(url, str):
        raise InputError("input_image.image_url must be a string")
    if url.startswith(("http://", "https://")):
        raise InputError("the sandbox fetches no URLs: send a data URI or a file_id")
    turn.media.append(("image", len(_decoded(url, "input_image.image_url", bare_base64=False)), ""))


def _file(part: dict[str, Any], turn: TurnInput, owner: dict[str, str]) -> None:
    filename = part.get("filename")
    if filename is not None and (not isinstance(filename, str) or not filename.strip()):
        raise InputError("input_file.filename must be a non-empty string")
    source = _one_source(part, "input_file", ("file_data", "file_id", "file_url"))
    if source == "file_url":
        raise InputError("the sandbox fetches no URLs: send file_data or a file_id")
    if source == "file_id":
        stored = _owned_file(part["file_id"], owner)
        turn.media.append(("file", stored.size, filename or stored.filename))
        return
    if filename is None:
        raise InputError("input_file.filename is required with file_data")
    data = part["file_data"]
    if not isinstance(data, str):
        raise InputError("input_file.file_data must be a string")
    turn.media.append(
        ("file", len(_decoded(data, "input_file.file_data", bare_base64=True)), filename)
    )


def _parts(content: Any, turn: TurnInput, owner: dict[str, str]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        turn.texts.append(content)
        return [{"type": "input_text", "text": content}]
    if not isinstance(content, list) or not content:
        raise InputError("content must be a string or a non-empty list of parts")
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            if not isinstance(part.get("text"), str):
                raise InputError(f"{kind}.text must be a string")
            turn.texts.append(part["text"])
        elif kind == "input_image":
            _image(part, turn, owner)
        elif kind == "input_file":
            _file(part, turn, owner)
        else:
            raise InputError(f"unsupported content part type: {kind!r}")
    return list(content)


def turn_input(value: Any, owner: dict[str, str]) -> TurnInput:
    """The parsed input, or InputError. `owner` selects the caller's files."""
    turn = TurnInput()
    if isinstance(value, str):
        turn.messages.append(("user", _parts(value, turn, owner)))
        return turn
    if not isinstance(value, list) or not value:
        raise InputError("input must be a string or a list of messages")
    for message in value:
        if not isinstance(message, dict) or message.get("type", "message") != "message":
            raise InputError("each input item must be a message")
        role = message.get("role")
        if role not in ROLES:
            raise InputError(f"message role must be one of {', '.join(ROLES)}")
        turn.messages.append((role, _parts(message.get("content"), turn, owner)))
    return turn


def media_descriptions(turn: TurnInput) -> str:
    """What the sandbox's answer adds for the images and documents it received."""
    return "".join(
        f" — I see an image of {size} bytes"
        if kind == "image"
        else f" — I read a document {filename} of {size} bytes"
        for kind, size, filename in turn.media
    )
