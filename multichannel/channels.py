"""How a stored reply reaches the user on each channel.

Each channel app registers one delivery function at start-up (its AppConfig.ready);
the core calls it explicitly, in order, for each answered message.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multichannel.models import UserMessage


class DeliveryError(Exception):
    transient = False


class DeliveryTransientError(DeliveryError):
    """Try again later (network trouble, rate limits, the channel's 5xx)."""

    transient = True


class DeliveryPermanentError(DeliveryError):
    """Retrying will not help (e.g. outside WhatsApp's 24-hour window)."""


Deliver = Callable[["UserMessage"], None]
_deliverers: dict[str, Deliver] = {}


def delivery_register(channel: str, deliver: Deliver) -> None:
    _deliverers[channel] = deliver


def deliver(message: "UserMessage") -> None:
    try:
        function = _deliverers[message.channel]
    except KeyError:
        raise DeliveryPermanentError(f"no delivery registered for {message.channel}") from None
    function(message)


# Some replies carry a secret (a one-time sign-in link) that must reach the user but
# never be stored: the stored reply holds a placeholder, expanded at each delivery.
Expand = Callable[["UserMessage"], tuple[str, str]]
_expanders: dict[str, Expand] = {}


def reply_expander_register(kind: str, expand: Expand) -> None:
    _expanders[kind] = expand


def reply_for_delivery(message: "UserMessage") -> tuple[str, str]:
    """(text to send, text safe to keep in our records) for an answered message."""
    expand = _expanders.get(message.kind)
    if expand is None:
        return message.reply_text, message.reply_text
    return expand(message)
