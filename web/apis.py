"""The web channel's JSON API (DRF): one view per operation. Views validate, call a
service and raise; serializers shape every body; web/errors.py answers every error."""

import re
from datetime import datetime
from typing import Any

from django.http import HttpResponse, HttpResponseBase
from django.urls import reverse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from multichannel.media import media_content, media_thumbnail
from multichannel.mka1 import Mka1Error, Mka1Object, is_response_id
from multichannel.models import Media, UserMessage
from multichannel.selectors import media_of_end_user, messages_of_end_user
from web.auth import ReadThrottle, RetrievalThrottle, SendThrottle, principal
from web.errors import BadRequest, ErrorSerializer, NotFound, upstream_error
from web.services import (
    MESSAGE_MAX_CHARS,
    NotFoundError,
    conversation_item_retrieve,
    reply_for_display,
    response_retrieve,
    web_message_send,
)

ITEM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

Responses = dict[int, Any]
SIGNED_OUT: Responses = {401: OpenApiResponse(ErrorSerializer, description="Nobody is signed in")}
THROTTLED: Responses = {
    429: OpenApiResponse(ErrorSerializer, description="Too many requests; see Retry-After")
}
NOT_FOUND: Responses = {
    404: OpenApiResponse(ErrorSerializer, description="Unknown, or not this user's"),
}
UPSTREAM: Responses = {
    400: ErrorSerializer,
    **SIGNED_OUT,
    **NOT_FOUND,
    **THROTTLED,
    502: OpenApiResponse(ErrorSerializer, description="MKA1 answered with an error"),
    504: OpenApiResponse(ErrorSerializer, description="MKA1 did not answer in time"),
}


class IsoDateTimeField(serializers.DateTimeField):
    """ISO 8601 with the offset as Python writes it (`+00:00`)."""

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class MediaSerializer(serializers.Serializer[Media]):
    """A file the user sent: only its owner can fetch it (`url`, `thumbnail_url`)."""

    id = serializers.IntegerField(source="pk")
    kind = serializers.CharField(source="message.kind")
    mime_type = serializers.CharField()
    filename = serializers.CharField(allow_blank=True)
    size = serializers.IntegerField(allow_null=True)
    voice = serializers.BooleanField()
    transcript = serializers.CharField(allow_blank=True, help_text="What a voice note said")
    url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_url(self, media: Media) -> str | None:
        return reverse("web:api-media", args=[media.pk]) if media.stored else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_thumbnail_url(self, media: Media) -> str | None:
        if not media.stored or media.message.kind != UserMessage.Kind.IMAGE:
            return None
        return reverse("web:api-media-thumbnail", args=[media.pk])


class TurnSerializer(serializers.Serializer[UserMessage]):
    """A message of the user's, on either channel, with its reply when there is one."""

    id = serializers.IntegerField(source="pk")
    channel = serializers.CharField()
    text = serializers.SerializerMethodField()
    sent_at = IsoDateTimeField()
    state = serializers.CharField()
    reply = serializers.SerializerMethodField()
    response_id = serializers.CharField(source="turn.response_id", allow_null=True, default=None)
    limited = serializers.BooleanField(help_text="Over the sender's rate limit: not answered")
    media = serializers.SerializerMethodField()
    feedback = serializers.CharField(
        source="turn.feedback",
        default="",
        help_text="The user's rating of the reply (thumbs_up, thumbs_down) or empty",
    )

    @extend_schema_field(serializers.CharField())
    def get_text(self, message: UserMessage) -> str:
        if message.kind in MEDIA_KINDS:
            return message.text  # a caption, or nothing (a voice note shows its transcript)
        return message.text or "(not text)"

    @extend_schema_field(MediaSerializer(allow_null=True))
    def get_media(self, message: UserMessage) -> dict[str, Any] | None:
        media = getattr(message, "media", None) if message.kind in MEDIA_KINDS else None
        return MediaSerializer(media).data if media is not None else None

    @extend_schema_field(serializers.CharField(allow_blank=True))
    def get_reply(self, message: UserMessage) -> str:
        answered = message.state in (UserMessage.State.ANSWERED, UserMessage.State.DELIVERED)
        return reply_for_display(message) if answered else ""


class ConversationSerializer(serializers.Serializer[Any]):
    turns = TurnSerializer(many=True)


class StoredResponseSerializer(serializers.Serializer[Mka1Object]):
    """The seed guide's contract: `{response_id, conversation_id, response}`."""

    response_id = serializers.CharField(source="id")
    conversation_id = serializers.SerializerMethodField()
    response = serializers.JSONField(source="data", help_text="The stored MKA1 response object")

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_conversation_id(self, response: Mka1Object) -> str | None:
        conversation = response.data.get("conversation")
        return conversation.get("id") if isinstance(conversation, dict) else None


class ConversationItemSerializer(serializers.Serializer[Any]):
    conversation_id = serializers.CharField()
    item = serializers.JSONField(help_text="The MKA1 conversation item")


MEDIA_KINDS = (UserMessage.Kind.AUDIO, UserMessage.Kind.IMAGE, UserMessage.Kind.DOCUMENT)
# Served inline only when a browser can show them harmlessly; anything else downloads.
INLINE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "audio/")


class ResponseRetrieveApi(APIView):
    """The seed guide's `GET /api/multichannel/:responseId`."""

    throttle_classes = [RetrievalThrottle]

    @extend_schema(
        operation_id="response_retrieve", responses={200: StoredResponseSerializer, **UPSTREAM}
    )
    def get(self, request: Request, response_id: str) -> Response:
        if not is_response_id(response_id):
            raise BadRequest("response id must match ^resp[-_][a-zA-Z0-9]+$")
        try:
            response = response_retrieve(end_user=principal(request), response_id=response_id)
        except NotFoundError:
            raise NotFound() from None
        except Mka1Error as exc:
            raise upstream_error(exc) from exc
        return Response(StoredResponseSerializer(response).data)


class ConversationApi(APIView):
    """The signed-in user's thread across both channels, oldest first."""

    throttle_classes = [ReadThrottle]

    @extend_schema(
        operation_id="conversation_retrieve",
        responses={200: ConversationSerializer, **SIGNED_OUT, **THROTTLED},
    )
    def get(self, request: Request) -> Response:
        messages = messages_of_end_user(end_user=principal(request))
        return Response(ConversationSerializer({"turns": messages}).data)


class ConversationItemApi(APIView):
    """One item of the user's MKA1 conversation (the seed's `conversations.getItem`)."""

    throttle_classes = [RetrievalThrottle]

    @extend_schema(
        operation_id="conversation_item_retrieve",
        responses={200: ConversationItemSerializer, **UPSTREAM},
    )
    def get(self, request: Request, item_id: str) -> Response:
        if not ITEM_ID_RE.fullmatch(item_id):
            raise BadRequest("item id must be 1-128 letters, digits, _ or -")
        try:
            conversation_id, item = conversation_item_retrieve(
                end_user=principal(request), item_id=item_id
            )
        except NotFoundError:
            raise NotFound() from None
        except Mka1Error as exc:
            raise upstream_error(exc) from exc
        return Response(
            ConversationItemSerializer({"conversation_id": conversation_id, "item": item.data}).data
        )


class MessageSendApi(APIView):
    """Continue the conversation from the web; answered on the same ordered path."""

    throttle_classes = [SendThrottle]

    class InputSerializer(serializers.Serializer[Any]):
        text = serializers.CharField(max_length=MESSAGE_MAX_CHARS, trim_whitespace=True)

    @extend_schema(
        operation_id="message_send",
        request=InputSerializer,
        responses={
            202: TurnSerializer,
            400: ErrorSerializer,
            **SIGNED_OUT,
            403: OpenApiResponse(ErrorSerializer, description="The CSRF check failed"),
            **THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        try:
            data = request.data
        except ParseError:
            raise BadRequest("the body must be JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object")
        serializer = self.InputSerializer(data=data)
        serializer.is_valid(raise_exception=True)  # answered as "text: <why>"
        message = web_message_send(
            end_user=principal(request), text=serializer.validated_data["text"]
        )
        return Response(TurnSerializer(message).data, status=status.HTTP_202_ACCEPTED)


class MessageRetrieveApi(APIView):
    """One of the user's messages, to poll until its reply is ready."""

    throttle_classes = [ReadThrottle]

    @extend_schema(
        operation_id="message_retrieve",
        responses={200: TurnSerializer, **SIGNED_OUT, **NOT_FOUND, **THROTTLED},
    )
    def get(self, request: Request, message_id: str) -> Response:
        # The route takes any text, so every malformed id gets this JSON answer too.
        if not message_id.isascii() or not message_id.isdigit() or len(message_id) > 18:
            raise NotFound()
        message = (
            messages_of_end_user(end_user=principal(request)).filter(pk=int(message_id)).first()
        )
        if message is None:
            raise NotFound()
        return Response(TurnSerializer(message).data)


class MediaApi(APIView):
    """A file the signed-in user sent (a voice note, a photo, a document); nobody
    else's, whatever the id."""

    throttle_classes = [ReadThrottle]

    @extend_schema(
        operation_id="media_retrieve",
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            **SIGNED_OUT,
            **NOT_FOUND,
            **THROTTLED,
        },
    )
    def get(self, request: Request, media_id: str) -> HttpResponseBase:
        media = _owned_media(request, media_id)
        inline = media.mime_type.startswith(INLINE_TYPES)
        return _file_response(
            media_content(media),
            content_type=media.mime_type if inline else "application/octet-stream",
            filename=media.filename or f"{media.message.kind}-{media.sha256[:12]}",
            inline=inline,
        )


class MediaThumbnailApi(APIView):
    """A small JPEG of a photo the signed-in user sent."""

    throttle_classes = [ReadThrottle]

    @extend_schema(
        operation_id="media_thumbnail",
        responses={
            (200, "image/jpeg"): OpenApiTypes.BINARY,
            **SIGNED_OUT,
            **NOT_FOUND,
            **THROTTLED,
        },
    )
    def get(self, request: Request, media_id: str) -> HttpResponseBase:
        media = _owned_media(request, media_id)
        if media.message.kind != UserMessage.Kind.IMAGE:
            raise NotFound()
        try:
            thumbnail = media_thumbnail(media)
        except ValueError:
            raise NotFound() from None  # not an image we can read
        return _file_response(thumbnail, content_type="image/jpeg", filename="", inline=True)


def _owned_media(request: Request, media_id: str) -> Media:
    # The route takes any text, so every malformed id gets this JSON answer too.
    if not media_id.isascii() or not media_id.isdigit() or len(media_id) > 18:
        raise NotFound()
    media = media_of_end_user(end_user=principal(request), media_id=int(media_id))
    if media is None or not media.stored:
        raise NotFound()
    return media


def _file_response(
    content: bytes, *, content_type: str, filename: str, inline: bool
) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    if not inline:
        response["Content-Disposition"] = content_disposition_header(True, filename) or ""
    # A user's file is theirs: never cached by a shared cache, never run as a page.
    response["Cache-Control"] = "private, max-age=3600"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
