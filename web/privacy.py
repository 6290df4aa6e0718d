"""What the web app contributes to erasure and retention (multichannel.privacy): the
person's sign-in links and their signed-in sessions go."""

from collections.abc import Collection
from datetime import datetime

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.models import Session
from django.utils import timezone
from django.utils.module_loading import import_string

from multichannel.models import EndUser
from web.auth import SESSION_KEY
from web.models import SignInLink


def web_forget(end_user: EndUser) -> dict[str, int]:
    """Delete their sign-in links and end their sessions (an erased person is signed
    out at once anyway: web.auth refuses them)."""
    links = SignInLink.objects.filter(end_user=end_user).delete()[0]
    sessions = 0
    # Through the session engine, so the cached copy of a session goes with its row.
    store: type[SessionBase] = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
    # Sessions are opaque rows; an erasure is rare enough to read the live ones.
    live = Session.objects.filter(expire_date__gt=timezone.now())
    for session in live.iterator(chunk_size=500):
        if session.get_decoded().get(SESSION_KEY) == end_user.pk:
            store(session.session_key).delete()
            sessions += 1
    return {"sign_in_links": links, "sessions": sessions}


def web_retain(cutoff: datetime, held: Collection[str]) -> dict[str, int]:
    """Retention: sign-in links that ran out before the cutoff."""
    links = SignInLink.objects.filter(expires_at__lt=cutoff).exclude(end_user_id__in=held)
    return {"sign_in_links": links.delete()[0]}
