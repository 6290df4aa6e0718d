"""Voice notes the sandbox can "hear": a small WAV file whose LIST/INFO comment (ICMT)
carries the sentence spoken, so the MKA1 stand-in transcribes it word for word. Other
audio gets a deterministic description instead (its duration, or its size and digest)."""

import hashlib
import struct

SAMPLE_RATE = 8000  # 8 kHz, 8-bit mono: a second of silence is 8 KB


def _chunk(kind: bytes, data: bytes) -> bytes:
    # RIFF chunks are word-aligned: an odd-sized chunk is followed by a pad byte.
    return kind + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def spoken_wav(text: str, seconds: float = 1.0) -> bytes:
    """A valid PCM WAV of `seconds` of silence whose comment says `text`."""
    if seconds < 0:
        raise ValueError("seconds cannot be negative")
    frames = round(SAMPLE_RATE * seconds)
    fmt = struct.pack("<HHIIHH", 1, 1, SAMPLE_RATE, SAMPLE_RATE, 1, 8)  # PCM, mono, 8 bit
    info = b"INFO" + _chunk(b"ICMT", text.encode() + b"\0")
    body = (
        b"WAVE" + _chunk(b"fmt ", fmt) + _chunk(b"LIST", info) + _chunk(b"data", b"\x80" * frames)
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _chunks(data: bytes, start: int, end: int) -> dict[bytes, bytes]:
    """The first chunk of each kind between `start` and `end` (malformed ones end it)."""
    found: dict[bytes, bytes] = {}
    offset = start
    while offset + 8 <= end:
        kind = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        if offset + 8 + size > end:
            break
        found.setdefault(kind, data[offset + 8 : offset + 8 + size])
        offset += 8 + size + size % 2
    return found


def wav_comment_and_seconds(data: bytes) -> tuple[str | None, float | None]:
    """For a RIFF/WAVE file: its ICMT comment and its duration (None where absent or
    unreadable). (None, None) for anything else."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None, None
    chunks = _chunks(data, 12, len(data))
    comment = None
    listing = chunks.get(b"LIST", b"")
    if listing[:4] == b"INFO":
        raw = _chunks(listing, 4, len(listing)).get(b"ICMT")
        if raw is not None:
            comment = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip() or None
    seconds = None
    fmt = chunks.get(b"fmt ", b"")
    if len(fmt) >= 16 and b"data" in chunks:
        byte_rate = struct.unpack("<I", fmt[8:12])[0]
        if byte_rate:
            seconds = len(chunks[b"data"]) / byte_rate
    return comment, seconds


def transcript_of(data: bytes) -> str:
    """What the sandbox "hears" in an audio file, deterministically."""
    comment, seconds = wav_comment_and_seconds(data)
    if comment is not None:
        return comment
    if seconds is not None:
        return f"(a voice note of {seconds:.1f} seconds)"
    digest = hashlib.sha256(data).hexdigest()[:8]
    return f"(a voice note of {len(data)} bytes, sha256 {digest})"
