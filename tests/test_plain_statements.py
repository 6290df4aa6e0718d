"""The hand-written statements of the hot paths (audit.toolkit's Columns, update_row,
upsert_row; the worker's selectors) read and write exactly what the ORM would: every
field of a row loaded the same way (aware datetimes, decoded JSON, booleans), every
saved field written the same way, on SQLite and on PostgreSQL."""

from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError, connection, models
from django.utils import timezone

from audit.toolkit import columns, update_row, upsert_row
from multichannel.models import Channel, Conversation, EndUser, UserMessage
from multichannel.selectors import (
    conversation_of_end_user,
    message_next_unfinished,
    messages_unfinished_exist,
)
from whatsapp.models import InboundMessage, OutboundMessage, WebhookDelivery, WhatsAppIdentity
from whatsapp.selectors import (
    delivery_claim,
    identity_matching,
    inbound_of,
    last_written_before,
    parts_sent,
    written_since,
)
from whatsapp.services import webhook_accept

pytestmark = pytest.mark.django_db


def _fields(instance: models.Model) -> dict[str, Any]:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


@pytest.fixture
def inbound() -> InboundMessage:
    end_user = EndUser.objects.create()
    identity = WhatsAppIdentity.objects.create(
        end_user=end_user, wa_id="15550001111", opted_out_at=timezone.now()
    )
    message = UserMessage.objects.create(
        end_user=end_user, channel=Channel.WHATSAPP, external_id="wamid.1", text="Olá 🌤",
        sent_at=timezone.now() - timedelta(minutes=3), next_attempt_at=timezone.now(),
    )  # fmt: skip
    return InboundMessage.objects.create(
        wamid="wamid.1", delivery=webhook_accept(raw_body=b"{}", payload={}), identity=identity,
        user_message=message, type="text", sent_at=message.sent_at, read_marked=True,
        raw={"text": {"body": "Olá 🌤"}, "n": [1, 2.5, None], "ok": True},
    )  # fmt: skip


@pytest.mark.parametrize(
    "model", [UserMessage, InboundMessage, WhatsAppIdentity, WebhookDelivery, EndUser]
)
def test_a_row_read_by_columns_is_the_instance_the_orm_loads(
    model: type[models.Model], inbound: InboundMessage
) -> None:
    expected = model._default_manager.get()
    table = connection.ops.quote_name(model._meta.db_table)
    read = columns(model, "t", connection)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {read.sql} FROM {table} t")
        row = cursor.fetchone()
    loaded = read.instance(row, connection)
    assert _fields(loaded) == _fields(expected)
    assert not loaded._state.adding
    assert any(value is not None for value in _fields(loaded).values())


def test_the_next_unfinished_message_comes_with_its_end_user(inbound: InboundMessage) -> None:
    first = inbound.user_message
    later = UserMessage.objects.create(
        end_user=first.end_user, channel=Channel.WEBAPP, text="later", sent_at=timezone.now()
    )
    found = message_next_unfinished(first.end_user_id)
    assert found is not None
    assert found.pk == first.pk
    assert _fields(found) == _fields(UserMessage.objects.get(pk=first.pk))
    assert found.end_user.erased_at is None
    assert found.end_user.pk == first.end_user_id
    first.state = UserMessage.State.DELIVERED
    update_row(first, ["state"])
    found = message_next_unfinished(first.end_user_id)
    assert found is not None
    assert found.pk == later.pk
    assert messages_unfinished_exist(first.end_user_id)
    later.state = UserMessage.State.FAILED
    update_row(later, ["state"])
    assert message_next_unfinished(first.end_user_id) is None
    assert not messages_unfinished_exist(first.end_user_id)


def test_the_inbound_message_is_read_once_with_its_sender(
    inbound: InboundMessage, django_assert_num_queries: Any
) -> None:
    message = UserMessage.objects.get(pk=inbound.user_message_id)
    with django_assert_num_queries(1):
        found = inbound_of(message)
        assert inbound_of(message) is found
        assert found.identity.opted_out_at == inbound.identity.opted_out_at
        assert found.user_message is message
    assert _fields(found) == _fields(inbound)
    web = UserMessage.objects.create(
        end_user=inbound.identity.end_user, channel=Channel.WEBAPP, text="x",
        sent_at=timezone.now(),
    )  # fmt: skip
    with pytest.raises(UserMessage.whatsapp_inbound.RelatedObjectDoesNotExist):
        inbound_of(web)


def test_delivery_reads(inbound: InboundMessage) -> None:
    message = inbound.user_message
    identity = inbound.identity
    assert last_written_before(identity, timezone.now())
    assert not last_written_before(identity, message.sent_at)  # not older than itself
    stranger = WhatsAppIdentity.objects.create(end_user=EndUser.objects.create(), bsuid="US.x")
    assert not last_written_before(stranger, timezone.now())  # never wrote
    assert not written_since(message)
    UserMessage.objects.create(
        end_user=message.end_user, channel=Channel.WEBAPP, kind=UserMessage.Kind.FEEDBACK,
        sent_at=message.sent_at + timedelta(seconds=1),
    )  # fmt: skip
    assert not written_since(message)  # a rating is not a message
    UserMessage.objects.create(
        end_user=message.end_user, channel=Channel.WEBAPP, sent_at=message.sent_at
    )  # same moment, stored after: later
    assert written_since(message)
    assert parts_sent(message) == set()
    OutboundMessage.objects.create(user_message=message, part=0, wamid="wamid.out", text="a")
    OutboundMessage.objects.create(user_message=message, part=1, wamid=None, text="b")
    assert parts_sent(message) == {0}


def test_identity_matching_by_either_id() -> None:
    end_user = EndUser.objects.create()
    identity = WhatsAppIdentity.objects.create(end_user=end_user, wa_id="1555", bsuid="US.1")
    for ids in ({"wa_id": "1555", "bsuid": None}, {"wa_id": None, "bsuid": "US.1"}):
        found = identity_matching(**ids)
        assert found is not None
        assert _fields(found) == _fields(identity)
    assert identity_matching(wa_id="1555", bsuid="US.other") is not None
    assert identity_matching(wa_id="1666", bsuid="US.2") is None


def test_a_delivery_is_claimed_only_while_it_waits() -> None:
    delivery = webhook_accept(raw_body=b'{"object": "x"}', payload={"object": "x"})
    claimed = delivery_claim(delivery.pk)
    assert claimed is not None
    assert claimed.raw_body == '{"object": "x"}'
    claimed.processed_at = timezone.now()
    update_row(claimed, ["processed_at"])
    assert delivery_claim(delivery.pk) is None


def test_conversation_of_end_user(end_user: EndUser) -> None:
    assert conversation_of_end_user(end_user=end_user) is None
    Conversation.objects.create(end_user=end_user, mka1_conversation_id="conv_1")
    found = conversation_of_end_user(end_user=end_user)
    assert found is not None
    assert found.end_user is end_user
    assert _fields(found) == _fields(Conversation.objects.get())


def test_update_row_writes_what_save_writes(inbound: InboundMessage) -> None:
    message = UserMessage.objects.get(pk=inbound.user_message_id)
    twin = UserMessage.objects.get(pk=inbound.user_message_id)
    fields = ["state", "reply_text", "attempts", "next_attempt_at", "error", "updated_at"]
    before = message.updated_at
    for instance in (message, twin):
        instance.state = UserMessage.State.ANSWERED
        instance.reply_text = "Olá de volta"
        instance.attempts = 3
        instance.next_attempt_at = None
        instance.error = "e"
    update_row(message, fields)
    by_update = _fields(UserMessage.objects.get(pk=message.pk))
    twin.save(update_fields=fields)
    by_save = _fields(UserMessage.objects.get(pk=message.pk))
    assert by_update.pop("updated_at") > before  # auto_now applied
    by_save.pop("updated_at")
    assert by_update == by_save
    assert by_update["reply_text"] == "Olá de volta"
    assert by_update["next_attempt_at"] is None
    UserMessage.objects.filter(pk=message.pk).update(text="untouched by update_row")
    update_row(message, ["error"])
    assert UserMessage.objects.get(pk=message.pk).text == "untouched by update_row"


def test_update_row_of_a_row_that_is_gone_raises_as_save_does() -> None:
    end_user = EndUser.objects.create()
    message = UserMessage(pk=987654, end_user=end_user, channel=Channel.WEBAPP, text="x")
    with pytest.raises(DatabaseError, match="did not affect any rows"):
        update_row(message, ["text"])


def test_upsert_row_inserts_or_updates_the_fields_named(inbound: InboundMessage) -> None:
    message = inbound.user_message
    fields = ["text", "errors", "updated_at"]
    upsert_row(OutboundMessage(user_message=message, part=1, text="a"), by=KEY, fields=fields)
    first = OutboundMessage.objects.get(part=1)
    assert (first.text, first.errors, first.status) == ("a", [], OutboundMessage.Status.ACCEPTED)
    twin = OutboundMessage(user_message=message, part=2, text="a")
    twin.save()
    assert {k: v for k, v in _fields(first).items() if k not in ("id", "part", "created_at",
            "updated_at")} == {k: v for k, v in _fields(twin).items() if k not in ("id", "part",
            "created_at", "updated_at")}  # fmt: skip
    changed = OutboundMessage(
        user_message=message, part=1, text="b", errors=[{"code": 1}], recipient="not this"
    )
    upsert_row(changed, by=KEY, fields=fields)
    again = OutboundMessage.objects.get(part=1)
    assert again.pk == first.pk
    assert (again.text, again.errors, again.recipient) == ("b", [{"code": 1}], "")
    assert again.updated_at > first.updated_at
    assert OutboundMessage.objects.count() == 2


KEY = ("user_message", "part")
