from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from audit.toolkit import ReadOnlyAdmin
from whatsapp.models import InboundMessage, OutboundMessage, WebhookDelivery, WhatsAppIdentity


@admin.register(WhatsAppIdentity)
class WhatsAppIdentityAdmin(ReadOnlyAdmin):
    list_display = ["end_user", "wa_id", "bsuid", "created_at"]
    search_fields = ["wa_id", "bsuid", "end_user__id"]
    list_select_related = ["end_user"]


class SetAsideFilter(admin.SimpleListFilter):
    """Deliveries whose fan-out failed for a reason of their own (`fan_out_error`)."""

    title = "fan-out"
    parameter_name = "fan_out"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("set_aside", "set aside (failed)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "set_aside":
            return queryset.exclude(fan_out_error="")
        return queryset


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "object", "message_count", "status_count", "received_at", "processed_at"]
    list_filter = ["object", ("processed_at", admin.EmptyFieldListFilter), SetAsideFilter]
    date_hierarchy = "received_at"


@admin.register(InboundMessage)
class InboundMessageAdmin(ReadOnlyAdmin):
    list_display = ["wamid", "type", "identity", "sent_at", "read_marked"]
    list_filter = ["type"]
    search_fields = ["wamid", "identity__wa_id", "identity__bsuid"]
    date_hierarchy = "sent_at"
    list_select_related = ["identity"]


@admin.register(OutboundMessage)
class OutboundMessageAdmin(ReadOnlyAdmin):
    list_display = ["wamid", "recipient", "part", "status", "status_at", "created_at"]
    list_filter = ["status"]
    search_fields = ["wamid", "recipient"]
    date_hierarchy = "created_at"
