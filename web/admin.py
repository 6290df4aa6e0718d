from django.contrib import admin

from audit.toolkit import ReadOnlyAdmin
from web.models import SignInLink


@admin.register(SignInLink)
class SignInLinkAdmin(ReadOnlyAdmin):
    list_display = ["id", "end_user", "created_at", "expires_at", "used_at"]
    search_fields = ["end_user__id", "requested_by"]
    exclude = ["token_hash"]
    list_select_related = ["end_user"]
