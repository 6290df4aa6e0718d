from django.db import IntegrityError, transaction
from django.db.models import Q

from multichannel.models import EndUser
from whatsapp.models import WhatsAppIdentity


def identity_resolve(*, wa_id: str | None, bsuid: str | None) -> WhatsAppIdentity:
    """The identity for a sender, created with a new EndUser on first contact.

    A sender is matched by either id; when a message brings an id we did not know yet
    for a known sender (a BSUID next to a known phone number, say), it is added.
    """
    if not wa_id and not bsuid:
        raise ValueError("a WhatsApp sender needs a wa_id or a business-scoped user id")
    match = Q()
    if wa_id:
        match |= Q(wa_id=wa_id)
    if bsuid:
        match |= Q(bsuid=bsuid)
    identity = WhatsAppIdentity.objects.select_for_update().filter(match).first()
    if identity is None:
        try:
            with transaction.atomic():
                return WhatsAppIdentity.objects.create(
                    end_user=EndUser.objects.create(), wa_id=wa_id or None, bsuid=bsuid or None
                )
        except IntegrityError:
            # A concurrent delivery created the same sender first.
            identity = WhatsAppIdentity.objects.get(match)
    changed = []
    if wa_id and identity.wa_id is None:
        identity.wa_id = wa_id
        changed.append("wa_id")
    if bsuid and identity.bsuid is None:
        identity.bsuid = bsuid
        changed.append("bsuid")
    if changed:
        identity.save(update_fields=[*changed, "updated_at"])
    return identity
