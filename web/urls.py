from django.urls import path

from web import apis, views

app_name = "web"

urlpatterns = [
    path("", views.home, name="home"),
    path("signin/<str:token>", views.sign_in, name="sign-in"),
    path("signout", views.sign_out, name="sign-out"),
    path(
        "api/multichannel/<path:response_id>",  # any text, so every bad id gets the JSON 400
        apis.ResponseRetrieveApi.as_view(),
        name="api-response",
    ),
    path("api/conversation", apis.ConversationApi.as_view(), name="api-conversation"),
    path(
        "api/conversation/items/<str:item_id>",
        apis.ConversationItemApi.as_view(),
        name="api-conversation-item",
    ),
    path("api/messages", apis.MessageSendApi.as_view(), name="api-messages"),
    path("api/messages/<int:message_id>", apis.MessageRetrieveApi.as_view(), name="api-message"),
]
