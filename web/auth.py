"""End users sign in on the web through a one-time link; their session carries only
their end user id. They are not Django users, so an end-user session can never reach
the admin, which requires a staff account."""

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication, CSRFCheck
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from multichannel.limits import (
    counted,
    counted_together,
    rate_parse,
    seconds_left_in_window,
    window_key,
)
from multichannel.models import EndUser
from multichannel.selectors import end_user_active

SESSION_KEY = "end_user_id"


@dataclass(frozen=True)
class EndUserPrincipal:
    end_user: EndUser
    is_authenticated: bool = True

    @property
    def pk(self) -> str:
        return self.end_user.pk


def end_user_sign_in(request: HttpRequest, end_user: EndUser) -> None:
    # A fresh session: nothing from before (a staff login included) survives, and the
    # session id changes, so a planted id cannot be used (session fixation).
    request.session.flush()
    request.session[SESSION_KEY] = end_user.pk


def end_user_sign_out(request: HttpRequest) -> None:
    request.session.flush()


@receiver(user_logged_in)
def _staff_login_drops_end_user(*, request: HttpRequest | None, **kwargs: Any) -> None:
    # Django's login keeps the session's data; a browser that signs in to the admin
    # must not stay an end user too (the reverse is end_user_sign_in's flush). This is
    # Django's documented hook for its own login view, which we do not call ourselves.
    if request is not None and hasattr(request, "session"):
        request.session.pop(SESSION_KEY, None)


def session_end_user(request: HttpRequest) -> EndUser | None:
    end_user_id = request.session.get(SESSION_KEY)
    if not end_user_id:
        return None
    # An erased person's sessions end the moment their erasure begins.
    return end_user_active(str(end_user_id))


class EndUserSessionAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[EndUserPrincipal, None] | None:
        end_user = session_end_user(request._request)
        if end_user is None:
            return None
        self._enforce_csrf(request)
        return EndUserPrincipal(end_user), None

    def authenticate_header(self, request: Request) -> str:
        return "Session"  # makes DRF answer 401, not 403, when nobody is signed in

    def _enforce_csrf(self, request: Request) -> None:
        def dummy_get_response(request: HttpRequest) -> Any:
            return None

        check = CSRFCheck(dummy_get_response)
        check.process_request(request._request)
        reason = check.process_view(request._request, dummy_get_response, (), {})
        if reason:
            raise PermissionDenied(f"CSRF Failed: {reason}")


class IsEndUser(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, EndUserPrincipal)


def principal(request: Request) -> EndUser:
    user = request.user
    assert isinstance(user, EndUserPrincipal)
    return user.end_user


class EndUserThrottle(BaseThrottle):
    """Rate limits per signed-in end user (per client address before sign-in), the
    rate `"<n>/<s|min|hour|day>"` of the view's scope: at most n requests in a window
    that opens at the first one. Counted with one atomic increment (one Redis round
    trip), where DRF's SimpleRateThrottle reads and writes back a pickled history of
    every request in the window (two round trips, and two requests at once both pass
    on the same count)."""

    scope: str
    THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES

    def __init__(self) -> None:
        # A bad rate is a system check error (multichannel.E016) before it gets here.
        self.limit, self.seconds = rate_parse(str(self.THROTTLE_RATES[self.scope]))
        self.left: int | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        user = request.user
        ident = user.pk if isinstance(user, EndUserPrincipal) else self.get_ident(request)
        count, self.left = counted(f"throttle:{self.scope}:{ident}", seconds=self.seconds)
        return count <= self.limit

    def wait(self) -> float:
        return float(self.seconds if self.left is None else self.left)


class ReadThrottle(EndUserThrottle):
    scope = "read"


class RetrievalThrottle(ReadThrottle):
    """The read rate, and API_RETRIEVALS_PER_DAY MKA1 reads per end user per UTC day:
    each is an audit event, so the daily cap bounds how fast one person can grow the
    ledger. Both counted in one round trip to the cache (the day as a fixed window)."""

    DAY = 24 * 3600

    def allow_request(self, request: Request, view: Any) -> bool:
        user = request.user
        if not isinstance(user, EndUserPrincipal):
            # Refused by the permission check anyway; the read rate still counts.
            self.daily_exceeded = False
            return super().allow_request(request, view)
        (count, self.left), (daily, _) = counted_together(
            (f"throttle:{self.scope}:{user.pk}", self.seconds),
            window_key(f"retrievals:{user.pk}", seconds=self.DAY),
        )
        self.daily_exceeded = daily > settings.API_RETRIEVALS_PER_DAY
        return count <= self.limit and not self.daily_exceeded

    def wait(self) -> float:
        if self.daily_exceeded:
            return float(max(seconds_left_in_window(self.DAY), self.left or 0))
        return super().wait()


class SendThrottle(EndUserThrottle):
    scope = "send"
