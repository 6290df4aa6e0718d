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
