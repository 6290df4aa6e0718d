import hashlib

from django.db import models

from multichannel.models import EndUser


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SignInLink(models.Model):
    """A one-time link sent over WhatsApp that signs its holder in on the web as the
    same end user. Only a hash of the token is kept: a database leak signs nobody in."""

    token_hash = models.CharField(max_length=64, unique=True)
    end_user = models.ForeignKey(EndUser, on_delete=models.CASCADE, related_name="sign_in_links")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    # The WhatsApp message that asked for it.
    requested_by = models.CharField(max_length=255, blank=True)

    def __str__(self) -> str:
        return f"sign-in link {self.pk} for {self.end_user_id}"
