"""The web page and the sign-in flow (Django templates; the page calls our API)."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from multichannel.channels import end_user_label
from web.auth import end_user_sign_in, end_user_sign_out, session_end_user
from web.selectors import sign_in_link_pending
from web.services import sign_in_link_redeem

# Holds the token between opening the link and pressing the button, so that the page
# the user looks at has no token in its address (nor in its requests' Referer).
TOKEN_COOKIE = "signin_token"  # noqa: S105 (a cookie's name)
TOKEN_COOKIE_PATH = "/signin"  # noqa: S105 (a cookie path)


@require_safe
@ensure_csrf_cookie
@never_cache
def home(request: HttpRequest) -> HttpResponse:
    end_user = session_end_user(request)
    return render(
        request,
        "web/home.html",
        {
            "end_user": end_user,
            "who": end_user_label(end_user) if end_user else "",
            "login_keyword": settings.LOGIN_KEYWORD,
        },
    )


@require_http_methods(["GET", "HEAD", "POST"])
@never_cache
def sign_in_link(request: HttpRequest, token: str) -> HttpResponse:
    """The address in the WhatsApp message. Opening it (GET, or HEAD like GET) moves the
    token into a short-lived cookie and redirects to the confirmation page; a POST here
    signs in directly. Link previews and mail scanners fetch URLs with GET, and must not
    use up a one-time link."""
    if request.method == "POST":
        return _redeem(request, token)
    response = redirect("web:sign-in")
    response.set_cookie(
        TOKEN_COOKIE,
        token,
        max_age=settings.SIGNIN_LINK_MINUTES * 60,
        path=TOKEN_COOKIE_PATH,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )
    response["Referrer-Policy"] = "no-referrer"
    return response


@require_http_methods(["GET", "HEAD", "POST"])
@never_cache
def sign_in(request: HttpRequest) -> HttpResponse:
    """Who the link signs in as, and the button that does it."""
    token = request.COOKIES.get(TOKEN_COOKIE, "")
    if request.method == "POST":
        response = _redeem(request, token)
    else:
        link = sign_in_link_pending(token=token) if token else None
        if link is None:
            response = _refused(request)
        else:
            response = render(request, "web/sign_in.html", {"who": end_user_label(link.end_user)})
    # The site's own policy (same-origin) here: "no-referrer" would make the browser
    # post the form with `Origin: null`, which the CSRF check rightly refuses. This
    # page's address holds no token, so its requests' Referer carries none.
    return response


def _redeem(request: HttpRequest, token: str) -> HttpResponse:
    end_user = sign_in_link_redeem(token=token) if token else None
    if end_user is None:
        response = _refused(request)
    else:
        end_user_sign_in(request, end_user)
        response = redirect("web:home")
    response.delete_cookie(TOKEN_COOKIE, path=TOKEN_COOKIE_PATH)
    return response


def _refused(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "web/sign_in_failed.html",
        {"login_keyword": settings.LOGIN_KEYWORD},
        status=410,
    )


@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    end_user_sign_out(request)
    return redirect("web:home")
