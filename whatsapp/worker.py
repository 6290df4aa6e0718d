"""What WhatsApp contributes to the worker's answering of a message: fetching a file
the user sent, the "typing…" indicator while MKA1 works, ratings (👍/👎 reactions),
and opting out (STOP) and back in (START)."""

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection

from multichannel.media import MediaError, size_text
from multichannel.models import Media, Turn, UserMessage
from multichannel.services import feedback_record
from whatsapp.graph import EXPIRED_URL, GraphError, MediaTooLargeError, graph_client
from whatsapp.models import InboundMessage, OutboundMessage
from whatsapp.privacy import ERASE, ERASE_CONFIRM
from whatsapp.selectors import inbound_of
from whatsapp.services import START, opt_out_set, read_mark_store

logger = logging.getLogger(__name__)

THUMBS_UP = "\U0001f44d"
THUMBS_DOWN = "\U0001f44e"
# Skin-tone modifiers (U+1F3FB..U+1F3FF) leave the rating as it is.
_SKIN_TONES = {chr(code) for code in range(0x1F3FB, 0x1F400)}


def _inbound(message: UserMessage) -> InboundMessage:
    return inbound_of(message)


def media_fetch(media: Media) -> bytes:
    """The file's bytes from the Graph API: a fresh download URL for the media id (URLs
    live minutes, ids days), then the download with the bearer token. Network trouble,
    the Graph API's 5xx and an expired URL are transient; an unknown id or a file over
    MEDIA_MAX_BYTES is not."""
    graph = graph_client()
    try:
        for fresh in (False, True):
            info = graph.media_info(media.external_id)
            url = info.get("url")
            if not isinstance(url, str) or not url:
                raise MediaError("WhatsApp gave no address for it", transient=True)
            if not media.expected_sha256 and isinstance(info.get("sha256"), str):
                media.expected_sha256 = info["sha256"][:64]
            try:
                return graph.media_download(url, max_bytes=settings.MEDIA_MAX_BYTES)
            except GraphError as exc:
                if fresh or exc.status not in EXPIRED_URL:
                    raise
                logger.info("media %s: download URL ran out; asking for a fresh one", media.pk)
        raise AssertionError("unreachable")
    except MediaTooLargeError:
        raise MediaError(f"it is larger than {size_text(settings.MEDIA_MAX_BYTES)}") from None
    except GraphError as exc:
        raise MediaError(
            "I could not download it", transient=exc.transient, detail=str(exc)
        ) from exc


def silenced(message: UserMessage) -> bool:
    """After STOP (or Meta's user_preferences stop) nothing is answered or sent until
    START, which is the one message still answered."""
    if message.kind in (START, ERASE, ERASE_CONFIRM):
        return False  # resuming, and a person's erasure request, are always heard
    return _inbound(message).identity.opted_out_at is not None


@contextmanager
def typing(message: UserMessage) -> Iterator[None]:
    """Show "typing…" while MKA1 works on the message, renewed every
    WHATSAPP_TYPING_RENEW_SECONDS (the indicator lasts about 25 seconds). Cosmetic: a
    failure is logged and the answer goes on."""
    inbound = _inbound(message)
    if not _typing_sent(inbound):
        yield
        return
    done = threading.Event()

    def renew() -> None:
        try:
            while not done.wait(settings.WHATSAPP_TYPING_RENEW_SECONDS):
                _typing_sent(inbound, save=False)
        finally:
            connection.close()  # this thread's own database connection, if it opened one

    renewer = threading.Thread(target=renew, name=f"typing-{message.pk}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join(timeout=5)


def _typing_sent(inbound: InboundMessage, *, save: bool = True) -> bool:
    try:
        graph_client().typing(inbound.wamid)
    except GraphError as exc:
        logger.info("no typing indicator for %s: %s", inbound.wamid, exc)
        return False
    if save and not inbound.read_marked:  # the indicator marks the message read too
        read_mark_store(inbound)
    return True


def reaction_feedback(message: UserMessage) -> str:
    """A reaction to one of our replies: 👍/👎 rate the response behind it (MKA1
    feedback); another emoji, or a removed reaction, is only stored. Never a reply."""
    reaction = _inbound(message).raw.get("reaction") or {}
    target, emoji = reaction.get("message_id"), reaction.get("emoji") or ""
    replied = (
        OutboundMessage.objects.select_related("user_message__turn__conversation")
        .filter(wamid=target, user_message__end_user_id=message.end_user_id)
        .first()
    )
    turn: Turn | None = replied.user_message.turn if replied else None
    if turn is None:
        logger.info("reaction to %s: not a reply of ours with a response", target)
        return ""
    base = "".join(ch for ch in emoji if ch not in _SKIN_TONES and ch != "\ufe0f")
    rating = {THUMBS_UP: "thumbs_up", THUMBS_DOWN: "thumbs_down"}.get(base)
    if rating is None and emoji:
        return ""  # another emoji: stored, nothing to tell MKA1
    feedback_record(message=message, turn=turn, rating=rating)
    return ""


def stop_reply(message: UserMessage) -> str:
    opt_out_set(identity=_inbound(message).identity, stopped=True, source="keyword")
    return settings.WHATSAPP_STOP_REPLY


def start_reply(message: UserMessage) -> str:
    opt_out_set(identity=_inbound(message).identity, stopped=False, source="keyword")
    return settings.WHATSAPP_START_REPLY


def asks_to_stop(text: str) -> bool:
    return text.strip().casefold() == settings.WHATSAPP_STOP_KEYWORD.casefold()


def asks_to_start(text: str) -> bool:
    return text.strip().casefold() == settings.WHATSAPP_START_KEYWORD.casefold()
