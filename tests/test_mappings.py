"""End users, their one conversation, and the response chain both channels extend."""

import pytest
from django.db import IntegrityError, transaction

from audit.models import AuditEvent
from multichannel import mka1
from multichannel.models import Conversation, EndUser, Turn
from multichannel.services import (
    ChainConflictError,
    assistant_text,
    conversation_ensure,
    turn_request,
    turn_store,
)
from whatsapp.models import WhatsAppIdentity
from whatsapp.services import identity_resolve

pytestmark = pytest.mark.django_db


def test_end_user_ids_are_opaque_and_stable(end_user: EndUser) -> None:
    assert end_user.id.startswith("user_")
    assert len(end_user.id) == len("user_") + 24
    assert EndUser.objects.get(pk=end_user.pk).id == end_user.id


def test_conversation_is_created_once_and_reused(end_user: EndUser, monkeypatch) -> None:
    calls: list[str] = []
    original = mka1.Mka1Client.create_conversation

    def spy(self, user_id, **kwargs):
        calls.append(user_id)
        return original(self, user_id, **kwargs)

    monkeypatch.setattr(mka1.Mka1Client, "create_conversation", spy)
    first = conversation_ensure(end_user=end_user, channel="whatsapp")
    again = conversation_ensure(end_user=end_user, channel="webapp")
    assert first.pk == again.pk
    assert calls == [end_user.id]
    assert first.mka1_conversation_id.startswith("conv_")
    created = AuditEvent.objects.get(action="conversations.create")
    assert created.conversation_id == first.mka1_conversation_id
    assert created.end_user_id == end_user.id


def test_turns_from_both_channels_extend_one_chain(end_user: EndUser) -> None:
    conversation = conversation_ensure(end_user=end_user, channel="whatsapp")
    first = turn_request(conversation=conversation, channel="whatsapp", text="hi")
    turn_store(conversation=conversation, channel="whatsapp", text="hi", response=first)
    second = turn_request(conversation=conversation, channel="webapp", text="again")
    turn_store(conversation=conversation, channel="webapp", text="again", response=second)

    assert second.data["previous_response_id"] == first.id
    conversation.refresh_from_db()
    assert conversation.previous_response_id == second.id
    chain = list(Turn.objects.values_list("previous_response_id", "response_id", "channel"))
    assert chain == [(None, first.id, "whatsapp"), (first.id, second.id, "webapp")]


def test_previous_response_id_advances_only_once_the_response_is_stored(
    end_user: EndUser, monkeypatch
) -> None:
    conversation = conversation_ensure(end_user=end_user, channel="whatsapp")
    response = turn_request(conversation=conversation, channel="whatsapp", text="hi")
    conversation.refresh_from_db()
    assert conversation.previous_response_id is None  # asked, not yet stored

    def broken_audit(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("multichannel.services.audit_event_record", broken_audit)
    with pytest.raises(RuntimeError):
        turn_store(conversation=conversation, channel="whatsapp", text="hi", response=response)
    conversation.refresh_from_db()
    assert conversation.previous_response_id is None
    assert not Turn.objects.exists()


def test_a_turn_built_on_a_stale_head_is_refused(end_user: EndUser) -> None:
    conversation = conversation_ensure(end_user=end_user, channel="whatsapp")
    stale = Conversation.objects.get(pk=conversation.pk)
    first = turn_request(conversation=conversation, channel="whatsapp", text="one")
    racing = turn_request(conversation=stale, channel="webapp", text="two")
    turn_store(conversation=conversation, channel="whatsapp", text="one", response=first)
    with pytest.raises(ChainConflictError):
        turn_store(conversation=stale, channel="webapp", text="two", response=racing)
    assert list(Turn.objects.values_list("response_id", flat=True)) == [first.id]


def test_database_refuses_a_second_conversation_for_one_user(end_user: EndUser) -> None:
    conversation_ensure(end_user=end_user, channel="whatsapp")
    with pytest.raises(IntegrityError), transaction.atomic():
        Conversation.objects.create(end_user=end_user, mka1_conversation_id="conv_other")


def test_database_refuses_a_forked_chain(end_user: EndUser) -> None:
    conversation = Conversation.objects.create(end_user=end_user, mka1_conversation_id="conv_1")
    common = {"end_user": end_user, "conversation": conversation, "channel": "whatsapp"}
    Turn.objects.create(response_id="resp_a", previous_response_id=None, input_text="a", **common)
    with pytest.raises(IntegrityError), transaction.atomic():
        Turn.objects.create(
            response_id="resp_b", previous_response_id=None, input_text="b", **common
        )
    Turn.objects.create(
        response_id="resp_c", previous_response_id="resp_a", input_text="c", **common
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        Turn.objects.create(
            response_id="resp_d", previous_response_id="resp_a", input_text="d", **common
        )


def test_whatsapp_sender_maps_to_one_end_user_never_the_phone_number() -> None:
    identity = identity_resolve(wa_id="15551234567", bsuid=None)
    assert identity_resolve(wa_id="15551234567", bsuid=None).end_user_id == identity.end_user_id
    assert "15551234567" not in identity.end_user_id
    assert EndUser.objects.count() == 1


def test_business_scoped_user_id_is_added_to_a_known_sender() -> None:
    identity = identity_resolve(wa_id="15551234567", bsuid=None)
    again = identity_resolve(wa_id="15551234567", bsuid="US.13491208655302741918")
    assert again.pk == identity.pk
    by_bsuid_only = identity_resolve(wa_id=None, bsuid="US.13491208655302741918")
    assert by_bsuid_only.end_user_id == identity.end_user_id


def test_identity_needs_at_least_one_id_in_the_database(end_user: EndUser) -> None:
    with pytest.raises(ValueError, match="wa_id"):
        identity_resolve(wa_id=None, bsuid=None)
    with pytest.raises(IntegrityError), transaction.atomic():
        WhatsAppIdentity.objects.create(end_user=end_user, wa_id=None, bsuid=None)


def test_assistant_text_joins_every_assistant_message() -> None:
    data = {
        "output": [
            {"type": "reasoning", "content": [{"text": "hidden"}]},
            {"type": "message", "role": "assistant", "content": [{"text": "Hello "}]},
            {"type": "message", "role": "assistant", "content": [{"text": "there"}]},
        ],
        "output_text": "ignored when messages exist",
    }
    assert assistant_text(data) == "Hello there"
    assert assistant_text({"output": [], "output_text": "fallback"}) == "fallback"
