"""What each channel app contributes to the shared core, in one registry.

Each channel app registers one `ChannelContribution` at start-up (its AppConfig.ready);
the core looks things up here and calls them explicitly: how a stored reply reaches the
user, replies that need no MKA1 call, replies that carry a secret filled in only when
sent, and how to show an end user to a person.
"""

from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multichannel.models import EndUser, Media, UserMessage


class DeliveryError(Exception):
    transient = False


class DeliveryTransientError(DeliveryError):
    """Try again later (network trouble, rate limits, the channel's 5xx)."""

    transient = True


class DeliveryPermanentError(DeliveryError):
    """Retrying will not help (e.g. outside WhatsApp's 24-hour window)."""


Deliver = Callable[["UserMessage"], None]
FixedReply = Callable[["UserMessage"], str]
# A reply with a secret (a one-time sign-in link): the stored reply holds a
# placeholder; `expand` fills it in for sending (it may issue the secret), `keep` gives
# the text safe to keep in our records and to show.
Expand = Callable[["UserMessage"], str]
Keep = Callable[["UserMessage"], str]
Label = Callable[["EndUser"], str | None]
# The bytes of a file a user sent (raises multichannel.media.MediaError).
FetchMedia = Callable[["Media"], bytes]
# Whether the user asked for no messages (then nothing is answered or sent).
Silenced = Callable[["UserMessage"], bool]
# Queue again the channel's own unfinished work whose task may have been lost (a
# webhook delivery not yet fanned out into messages, say); returns how much. `starting`:
# a consumer is starting, so nothing queued by a process that died can be waited for.
Recover = Callable[[bool], int]
# Around the work on a message (e.g. a "typing…" indicator while MKA1 thinks).
Working = Callable[["UserMessage"], AbstractContextManager[None]]
# Does this message text ask for the command? (e.g. LOGIN, case-insensitive)
Command = Callable[[str], bool]
# Is this text message, given what came before it, really this command? (e.g. YES
# right after DELETE MY DATA.) Asked by the worker, not when the message is stored.
ContextualCommand = Callable[["UserMessage"], bool]


@dataclass(frozen=True)
class ChannelPrivacy:
    """What a channel app does when a person's data is erased or retention runs
    (multichannel.privacy). Each must be harmless to repeat."""

    # Delete the channel's rows of this person (raw payloads, sent texts, sign-ins);
    # returns what was removed, by name.
    forget: Callable[["EndUser"], Mapping[str, int]]
    # Send the person the final confirmation of their erasure; False if it cannot be.
    notify_erased: Callable[["EndUser"], bool] | None = None
    # Replace the person's channel ids with a keyed hash of them; returns how many.
    pseudonymise: Callable[["EndUser"], int] | None = None
    # Remove content older than the cutoff, except of these end users (a legal hold).
    retain: Callable[[datetime, Collection[str]], Mapping[str, int]] | None = None
    # The end users a channel address names (a phone number, say): (live, erased).
    lookup: Callable[[str], tuple[list["EndUser"], list["EndUser"]]] | None = None


@dataclass(frozen=True)
class SecretReply:
    expand: Expand
    keep: Keep


@dataclass(frozen=True)
class ChannelContribution:
    """`channel`: the channel whose messages `deliver` sends (None for a contribution
    that delivers nothing, or a channel the user polls, like the web page)."""

    name: str
    channel: str | None = None
    deliver: Deliver | None = None
    fixed_replies: Mapping[str, FixedReply] = field(default_factory=dict)
    secret_replies: Mapping[str, SecretReply] = field(default_factory=dict)
    # Message kind -> whether a text asks for it: commands any channel's user may type.
    commands: Mapping[str, Command] = field(default_factory=dict)
    contextual_commands: Mapping[str, ContextualCommand] = field(default_factory=dict)
    privacy: ChannelPrivacy | None = None
    end_user_label: Label | None = None
    fetch_media: FetchMedia | None = None
    silenced: Silenced | None = None
    working: Working | None = None
    recover: Recover | None = None


_contributions: dict[str, ChannelContribution] = {}


def channel_register(contribution: ChannelContribution) -> None:
    _contributions[contribution.name] = contribution


def _of_channel(channel: str) -> ChannelContribution | None:
    for contribution in _contributions.values():
        if contribution.channel == channel:
            return contribution
    return None


def fetch_media(media: "Media") -> bytes:
    contribution = _of_channel(media.message.channel)
    if contribution is None or contribution.fetch_media is None:
        raise LookupError(f"{media.message.channel} cannot fetch media")
    return contribution.fetch_media(media)


def silenced(message: "UserMessage") -> bool:
    contribution = _of_channel(message.channel)
    return bool(contribution and contribution.silenced and contribution.silenced(message))


def working(message: "UserMessage") -> AbstractContextManager[None]:
    contribution = _of_channel(message.channel)
    if contribution is None or contribution.working is None:
        return nullcontext()
    return contribution.working(message)


def recover(*, starting: bool) -> int:
    """Each channel's own recovery (see `Recover`); how much was queued in all."""
    return sum(
        contribution.recover(starting)
        for contribution in _contributions.values()
        if contribution.recover is not None
    )


def deliver(message: "UserMessage") -> None:
    for contribution in _contributions.values():
        if contribution.channel == message.channel:
            if contribution.deliver is not None:
                contribution.deliver(message)
            return  # a channel without a deliverer is read by polling: nothing to push
    raise DeliveryPermanentError(f"no channel registered for {message.channel}")


def fixed_reply(message: "UserMessage") -> str | None:
    """The reply for a message kind answered without MKA1, or None."""
    for contribution in _contributions.values():
        reply = contribution.fixed_replies.get(message.kind)
        if reply is not None:
            return reply(message)
    return None


def command_kind(text: str) -> str | None:
    """The kind of message a text is when it is a command some channel app answers."""
    for contribution in _contributions.values():
        for kind, asks in contribution.commands.items():
            if asks(text):
                return kind
    return None


def contextual_kind(message: "UserMessage") -> str | None:
    """The command a text message turns out to be in its context, or None."""
    for contribution in _contributions.values():
        for kind, applies in contribution.contextual_commands.items():
            if applies(message):
                return kind
    return None


def privacy_contributions() -> list[tuple[str, ChannelPrivacy]]:
    """(name, privacy) of every channel app that keeps something of a person."""
    return [
        (contribution.name, contribution.privacy)
        for contribution in _contributions.values()
        if contribution.privacy is not None
    ]


def privacy_of_channel(channel: str) -> ChannelPrivacy | None:
    contribution = _of_channel(channel)
    return contribution.privacy if contribution is not None else None


def _secret_reply(message: "UserMessage") -> SecretReply | None:
    for contribution in _contributions.values():
        secret = contribution.secret_replies.get(message.kind)
        if secret is not None:
            return secret
    return None


def reply_to_send(message: "UserMessage") -> str:
    """The answered message's reply as it goes out (any secret filled in, and issued)."""
    secret = _secret_reply(message)
    return secret.expand(message) if secret else message.reply_text


def reply_to_keep(message: "UserMessage") -> str:
    """The answered message's reply as our records keep and show it (no side effects)."""
    secret = _secret_reply(message)
    return secret.keep(message) if secret else message.reply_text


def end_user_label(end_user: "EndUser") -> str:
    """How to show who an end user is to a person (a masked phone number, say)."""
    for contribution in _contributions.values():
        if contribution.end_user_label is not None:
            label = contribution.end_user_label(end_user)
            if label:
                return label
    return end_user.pk
