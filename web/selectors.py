"""Read paths of the web channel."""

from django.utils import timezone

from web.models import SignInLink, token_hash


def sign_in_link_pending(*, token: str) -> SignInLink | None:
    """The unused, unexpired link this token opens (without using it), or None."""
    return (
        SignInLink.objects.select_related("end_user")
        .filter(token_hash=token_hash(token), used_at__isnull=True, expires_at__gt=timezone.now())
        .first()
    )
