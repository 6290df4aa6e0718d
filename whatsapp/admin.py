from django.contrib import admin

from audit.toolkit import ReadOnlyAdmin
from whatsapp.models import InboundMessage, OutboundMessage, WebhookDelivery, WhatsAppIdentity


@admin.register(WhatsAppIdentity)
class WhatsAppIdentityAdmin(ReadOnlyAdmin):
    list_display = ["end_user", "wa_id", "bsuid", "created_at"]
    search_fields = ["wa_id", "bsuid", "end_user__id"]
    list_select_related = ["end_user"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "object", "message_count", "status_count", "received_at"]
    list_filter = ["object"]
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
