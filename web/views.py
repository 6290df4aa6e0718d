"""The web page and the sign-in flow (Django templates; the page calls our API)."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from web.auth import end_user_sign_in, end_user_sign_out, session_end_user
from web.services import sign_in_link_redeem


@require_GET
@ensure_csrf_cookie
@never_cache
def home(request: HttpRequest) -> HttpResponse:
    end_user = session_end_user(request)
    return render(
        request,
        "web/home.html",
        {"end_user": end_user, "login_keyword": settings.LOGIN_KEYWORD},
    )


@require_http_methods(["GET", "POST"])
@never_cache
def sign_in(request: HttpRequest, token: str) -> HttpResponse:
    # Opening the link (GET) only shows a button; the POST signs in. Link previews and
    # mail scanners fetch URLs with GET, and must not use up a one-time link.
    if request.method == "GET":
        return render(request, "web/sign_in.html", {"token": token})
    end_user = sign_in_link_redeem(token=token)
    if end_user is None:
        return render(
            request,
            "web/sign_in_failed.html",
            {"login_keyword": settings.LOGIN_KEYWORD},
            status=410,
        )
    end_user_sign_in(request, end_user)
    return redirect("web:home")


@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    end_user_sign_out(request)
    return redirect("web:home")
