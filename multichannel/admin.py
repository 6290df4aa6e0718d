from django.contrib import admin

from audit.toolkit import ReadOnlyAdmin
from multichannel.models import Conversation, EndUser, Turn, UserMessage


@admin.register(EndUser)
class EndUserAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at"]
    search_fields = ["id"]
    date_hierarchy = "created_at"


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    list_display = ["mka1_conversation_id", "end_user", "previous_response_id", "updated_at"]
    search_fields = ["mka1_conversation_id", "end_user__id", "previous_response_id"]
    list_select_related = ["end_user"]


@admin.register(Turn)
class TurnAdmin(ReadOnlyAdmin):
    list_display = ["response_id", "channel", "end_user", "previous_response_id", "created_at"]
    list_filter = ["channel"]
    search_fields = ["response_id", "previous_response_id", "end_user__id"]
    date_hierarchy = "created_at"
    list_select_related = ["end_user"]


@admin.register(UserMessage)
class UserMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "channel", "kind", "state", "end_user", "sent_at", "attempts"]
    list_filter = ["channel", "kind", "state"]
    search_fields = ["external_id", "end_user__id", "turn__response_id"]
    date_hierarchy = "sent_at"
    list_select_related = ["end_user"]
