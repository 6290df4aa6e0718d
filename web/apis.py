"""The web channel's JSON API (DRF): one view per operation."""

import re
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from multichannel.mka1 import Mka1Error, Mka1NotFoundError, Mka1TimeoutError, is_response_id
from multichannel.models import UserMessage
from multichannel.selectors import messages_of_end_user
from web.auth import DailyRetrievalThrottle, ReadThrottle, SendThrottle, principal
from web.services import (
    MESSAGE_MAX_CHARS,
    NotFoundError,
    conversation_item_retrieve,
    reply_for_display,
    response_retrieve,
    web_message_send,
)

ITEM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

ErrorSerializer = inline_serializer("Error", {"error": serializers.CharField()})
# DRF answers these itself, before the view runs, in its own shape.
DetailSerializer = inline_serializer("Detail", {"detail": serializers.CharField()})
SIGNED_OUT = OpenApiResponse(DetailSerializer, description="Nobody is signed in")
THROTTLED = OpenApiResponse(DetailSerializer, description="Too many requests; see Retry-After")
Responses = dict[int, Any]
NOT_FOUND: Responses = {
    404: OpenApiResponse(ErrorSerializer, description="Unknown, or not this user's"),
}
UPSTREAM: Responses = {
    400: ErrorSerializer,
    401: SIGNED_OUT,
    **NOT_FOUND,
    429: THROTTLED,
    502: OpenApiResponse(ErrorSerializer, description="MKA1 answered with an error"),
    504: OpenApiResponse(ErrorSerializer, description="MKA1 did not answer in time"),
}


def _error(message: str, code: int) -> Response:
    return Response({"error": message}, status=code)


def _upstream_error(exc: Mka1Error) -> Response:
    if isinstance(exc, Mka1NotFoundError):
        return _error("not found", status.HTTP_404_NOT_FOUND)
    if isinstance(exc, Mka1TimeoutError):
        return _error("MKA1 did not answer in time; try again", status.HTTP_504_GATEWAY_TIMEOUT)
    return _error("MKA1 could not answer; try again later", status.HTTP_502_BAD_GATEWAY)


class ResponseRetrieveApi(APIView):
    """The seed guide's `GET /api/multichannel/:responseId`."""

    throttle_classes = [ReadThrottle, DailyRetrievalThrottle]

    class OutputSerializer(serializers.Serializer[Any]):
        response_id = serializers.CharField()
        conversation_id = serializers.CharField(allow_null=True)
        response = serializers.DictField(help_text="The stored MKA1 response object")

    @extend_schema(operation_id="response_retrieve", responses={200: OutputSerializer, **UPSTREAM})
    def get(self, request: Request, response_id: str) -> Response:
        if not is_response_id(response_id):
            return _error("response id must match ^resp[-_][a-zA-Z0-9]+$", 400)
        try:
            response = response_retrieve(end_user=principal(request), response_id=response_id)
        except NotFoundError:
            return _error("not found", status.HTTP_404_NOT_FOUND)
        except Mka1Error as exc:
            return _upstream_error(exc)
        conversation = response.data.get("conversation")
        return Response(
            {
                "response_id": response.id,
                "conversation_id": conversation.get("id")
                if isinstance(conversation, dict)
                else None,
                "response": response.data,
            }
        )


class ConversationApi(APIView):
    """The signed-in user's thread across both channels, oldest first."""

    throttle_classes = [ReadThrottle]

    class TurnSerializer(serializers.Serializer[Any]):
        id = serializers.IntegerField()
        channel = serializers.CharField()
        text = serializers.CharField()
        sent_at = serializers.DateTimeField()
        state = serializers.CharField()
        reply = serializers.CharField(allow_blank=True)
        response_id = serializers.CharField(allow_null=True)
        limited = serializers.BooleanField(help_text="Over the sender's rate limit: not answered")

    @extend_schema(
        operation_id="conversation_retrieve",
        responses={
            200: inline_serializer("Conversation", {"turns": TurnSerializer(many=True)}),
            401: SIGNED_OUT,
            429: THROTTLED,
        },
    )
    def get(self, request: Request) -> Response:
        messages = messages_of_end_user(end_user=principal(request))
        return Response({"turns": [turn_json(message) for message in messages]})


def turn_json(message: UserMessage) -> dict[str, Any]:
    answered = message.state in (UserMessage.State.ANSWERED, UserMessage.State.DELIVERED)
    return {
        "id": message.pk,
        "channel": message.channel,
        "text": message.text or "(not text)",
        "sent_at": message.sent_at.isoformat(),
        "state": message.state,
        "reply": reply_for_display(message) if answered else "",
        "response_id": message.turn.response_id if message.turn else None,
        "limited": message.limited,
    }


class ConversationItemApi(APIView):
    """One item of the user's MKA1 conversation (the seed's `conversations.getItem`)."""

    throttle_classes = [ReadThrottle, DailyRetrievalThrottle]

    @extend_schema(
        operation_id="conversation_item_retrieve",
        responses={
            200: inline_serializer(
                "ConversationItem",
                {"conversation_id": serializers.CharField(), "item": serializers.DictField()},
            ),
            **UPSTREAM,
        },
    )
    def get(self, request: Request, item_id: str) -> Response:
        if not ITEM_ID_RE.fullmatch(item_id):
            return _error("item id must be 1-128 letters, digits, _ or -", 400)
        try:
            conversation_id, item = conversation_item_retrieve(
                end_user=principal(request), item_id=item_id
            )
        except NotFoundError:
            return _error("not found", status.HTTP_404_NOT_FOUND)
        except Mka1Error as exc:
            return _upstream_error(exc)
        return Response({"conversation_id": conversation_id, "item": item.data})


class MessageSendApi(APIView):
    """Continue the conversation from the web; answered on the same ordered path."""

    throttle_classes = [SendThrottle]

    class InputSerializer(serializers.Serializer[Any]):
        text = serializers.CharField(max_length=MESSAGE_MAX_CHARS, trim_whitespace=True)

    @extend_schema(
        operation_id="message_send",
        request=InputSerializer,
        responses={
            202: ConversationApi.TurnSerializer,
            400: ErrorSerializer,
            401: SIGNED_OUT,
            403: OpenApiResponse(DetailSerializer, description="The CSRF check failed"),
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        try:
            data = request.data
        except ParseError:
            return _error("the body must be JSON", 400)
        if not isinstance(data, dict):
            return _error("the body must be a JSON object", 400)
        serializer = self.InputSerializer(data=data)
        if not serializer.is_valid():
            first = next(iter(serializer.errors.values()))[0]
            return _error(f"text: {first}", 400)
        message = web_message_send(
            end_user=principal(request), text=serializer.validated_data["text"]
        )
        return Response(turn_json(message), status=status.HTTP_202_ACCEPTED)


class MessageRetrieveApi(APIView):
    """One of the user's messages, to poll until its reply is ready."""

    throttle_classes = [ReadThrottle]

    @extend_schema(
        operation_id="message_retrieve",
        responses={
            200: ConversationApi.TurnSerializer,
            401: SIGNED_OUT,
            **NOT_FOUND,
            429: THROTTLED,
        },
    )
    def get(self, request: Request, message_id: str) -> Response:
        # The route takes any text, so every malformed id gets this JSON answer too.
        if not message_id.isascii() or not message_id.isdigit() or len(message_id) > 18:
            return _error("not found", status.HTTP_404_NOT_FOUND)
        message = (
            messages_of_end_user(end_user=principal(request)).filter(pk=int(message_id)).first()
        )
        if message is None:
            return _error("not found", status.HTTP_404_NOT_FOUND)
        return Response(turn_json(message))
