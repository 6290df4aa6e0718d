from django.urls import path

from multichannel.sandbox import graph_views, mka1_media_views, mka1_views, phone_views

app_name = "sandbox"

_llm = "mka1/api/v1/llm"
_conversation = f"{_llm}/conversations/<str:conversation_id>"
_graph = "graph/<str:version>"

urlpatterns = [
    path("whatsapp/", phone_views.phone, name="phone"),
    # --- MKA1 ---
    path(f"{_llm}/conversations", mka1_views.conversations_create, name="mka1-conversations"),
    path(_conversation, mka1_views.conversation_detail, name="mka1-conversation"),
    path(f"{_llm}/responses", mka1_views.responses_create, name="mka1-responses"),
    path(f"{_llm}/responses/<str:response_id>", mka1_views.response_detail, name="mka1-response"),
    path(
        f"{_conversation}/items",
        mka1_views.conversation_items_list,
        name="mka1-conversation-items",
    ),
    path(
        f"{_conversation}/items/<str:item_id>",
        mka1_views.conversation_item_detail,
        name="mka1-conversation-item",
    ),
    path(
        f"{_llm}/speech/transcriptions",
        mka1_media_views.transcriptions_create,
        name="mka1-transcriptions",
    ),
    path(
        f"{_llm}/speech/transcriptions/history",
        mka1_media_views.transcriptions_history,
        name="mka1-transcriptions-history",
    ),
    path(
        f"{_llm}/speech/transcriptions/history/<str:stt_id>",
        mka1_media_views.transcriptions_history_delete,
        name="mka1-transcription",
    ),
    path(f"{_llm}/files", mka1_media_views.files_create, name="mka1-files"),
    path(f"{_llm}/files/<str:file_id>", mka1_media_views.file_detail, name="mka1-file"),
    path(f"{_llm}/feedback/responses", mka1_media_views.feedback_create, name="mka1-feedback"),
    # --- Graph API (the download URL first: its path would also fit the media id's) ---
    path(
        "graph/whatsapp_business/attachments/",
        graph_views.media_download,
        name="graph-media-download",
    ),
    path(f"{_graph}/<str:phone_number_id>/messages", graph_views.messages, name="graph-messages"),
    path(
        f"{_graph}/<str:phone_number_id>/media", graph_views.media_upload, name="graph-media-upload"
    ),
    path(f"{_graph}/<str:media_id>", graph_views.media_info, name="graph-media"),
]
