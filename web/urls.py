from django.urls import path, re_path

from web import apis, views

app_name = "web"

urlpatterns = [
    path("", views.home, name="home"),
    path("signin", views.sign_in, name="sign-in"),
    path("signin/<str:token>", views.sign_in_link, name="sign-in-link"),
    path("signout", views.sign_out, name="sign-out"),
    # The id routes take any text (newlines and slashes included), so that a malformed id
    # reaches the view and gets its JSON answer, never Django's HTML 404 page.
    re_path(
        r"^api/multichannel/(?P<response_id>[\s\S]*)$",
        apis.ResponseRetrieveApi.as_view(),
        name="api-response",
    ),
    path("api/conversation", apis.ConversationApi.as_view(), name="api-conversation"),
    re_path(
        r"^api/conversation/items/(?P<item_id>[\s\S]+)$",
        apis.ConversationItemApi.as_view(),
        name="api-conversation-item",
    ),
    path("api/messages", apis.MessageSendApi.as_view(), name="api-messages"),
    re_path(
        r"^api/media/(?P<media_id>[^/]+)/thumbnail$",
        apis.MediaThumbnailApi.as_view(),
        name="api-media-thumbnail",
    ),
    re_path(r"^api/media/(?P<media_id>[\s\S]+)$", apis.MediaApi.as_view(), name="api-media"),
    re_path(
        r"^api/messages/(?P<message_id>[\s\S]+)$",
        apis.MessageRetrieveApi.as_view(),
        name="api-message",
    ),
]
