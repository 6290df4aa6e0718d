"""Media a WhatsApp user sends, as the sandbox holds it: the bytes uploaded to the Graph
API stand-in (in process by default, or over HTTP to a sandbox server such as a Stack's
`{sandbox_url}/sandbox/graph`), and the webhook message that names them."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multichannel.sandbox.media import UploadedMedia

IN_PROCESS = "sandbox://graph"
PNG = bytes.fromhex(  # the smallest valid PNG: one transparent pixel
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000b49444154789c6360000200000500017a5eab3f0000000049454e44ae426082"
)
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


def media_upload(
    data: bytes, *, mime_type: str, filename: str = "", graph_url: str = IN_PROCESS
) -> "UploadedMedia":
    """Upload bytes to the Graph API stand-in (`POST /{version}/{phone-number-id}/media`)."""
    from multichannel.sandbox.media import media_upload as upload

    return upload(data, mime_type=mime_type, filename=filename, graph_url=graph_url)


def media_message(
    data: bytes,
    *,
    mime_type: str,
    filename: str = "",
    caption: str | None = None,
    voice: bool = False,
    message_type: str | None = None,
    graph_url: str = IN_PROCESS,
    **event: Any,
) -> dict[str, Any]:
    """Upload `data`, then the webhook message (with its contact) of a user sending it:
    an image, audio or document message by its MIME type unless `message_type` says.
    `event` takes `message_event`'s keywords (wa_id, message_id, timestamp...)."""
    from multichannel.sandbox.media import media_message_event

    uploaded = media_upload(data, mime_type=mime_type, filename=filename, graph_url=graph_url)
    return media_message_event(
        uploaded, message_type=message_type, caption=caption, voice=voice, **event
    )


def voice_note(
    text: str, *, seconds: float = 1.0, graph_url: str = IN_PROCESS, **event: Any
) -> dict[str, Any]:
    """A voice note whose transcription by the MKA1 stand-in is exactly `text`."""
    from multichannel.sandbox.audio import spoken_wav

    return media_message(
        spoken_wav(text, seconds),
        mime_type="audio/wav",
        filename="voice-note.wav",
        message_type="audio",
        voice=True,
        graph_url=graph_url,
        **event,
    )


def picture_png(width: int = 240, height: int = 160) -> bytes:
    """A small but visible picture (a sky over a field), for pages that show photos."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height * 2 // 3, width, height), fill=(90, 160, 80))
    draw.ellipse((width - 70, 15, width - 25, 60), fill=(250, 215, 90))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
