"""How many SQL queries one webhook costs, exactly: the request, which only keeps the
delivery, and the worker's fan-out of it into messages and statuses. The fan-out's
counts are written as a cost per delivery plus a cost per message: a query per message
that creeps in (an N+1) fails these tests.

Counted inside the test's transaction, where the fan-out's own transaction shows as a
SAVEPOINT/RELEASE pair (in production it is BEGIN/COMMIT, which Django does not log).
The answering of the messages, queued after commit, is not counted here."""

import json
from functools import partial
from typing import Any

import pytest
from django.db.models import signals
from django.utils import timezone

from audit.toolkit import insert_row
from multichannel.models import Channel, Conversation, EndUser, ProcessingLease, Turn, UserMessage
from multichannel.sandbox import whatsapp as wa
from tests.support.threads import at_once
from tests.support.webhooks import PostWebhook, webhook_deliver
from whatsapp import views
from whatsapp.models import InboundMessage, OutboundMessage, WebhookDelivery, WhatsAppIdentity
from whatsapp.services import delivery_fan_out, identity_resolve, webhook_accept

pytestmark = pytest.mark.django_db

# The request: the delivery row, one INSERT in autocommit. No transaction, no lookup.
REQUEST = 1
# The fan-out: the ids of the deliveries waiting (1); per delivery its transaction (2)
# with the delivery read and locked (1), and marked processed at the end (1).
WAITING_READ = 1
ATTEMPT = 3
MARK = 1
PER_DELIVERY = WAITING_READ + ATTEMPT + MARK
# The sender's identity (1), the UserMessage and the InboundMessage (2): plain inserts,
# no lookup of stored ids first and no savepoint.
PER_MESSAGE_FROM_A_KNOWN_SENDER = 3
# ...plus the EndUser and the identity (2).
PER_MESSAGE_FROM_A_NEW_SENDER = PER_MESSAGE_FROM_A_KNOWN_SENDER + 2
# A redelivery, however many messages it carries: the first attempt fails at its first
# message's insert (at most a message's statements) and is rolled back (a ROLLBACK TO
# SAVEPOINT before the RELEASE), then the careful attempt reads the delivery again,
# finds every stored id in one lookup (1) and stores nothing.
FAILED_ATTEMPT = ATTEMPT + PER_MESSAGE_FROM_A_KNOWN_SENDER + 1
REDELIVERY = WAITING_READ + FAILED_ATTEMPT + ATTEMPT + 1 + MARK
# The outbound messages read and locked in one query (1) and written back in one (1).
STATUS_WEBHOOK = PER_DELIVERY + 2
# Statuses for one message (most webhooks): one conditional update instead.
ONE_MESSAGE_STATUS_WEBHOOK = PER_DELIVERY + 1
# A fan-out repeated (its task ran twice, or recovery raced it): the read finds it done.
FANNED_OUT_ALREADY = 1


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The deliveries whose fan-out the webhook queued, instead of running them."""
    ids: list[int] = []
    monkeypatch.setattr(views, "webhook_fan_out_queue", ids.append)
    return ids


@pytest.fixture
def post_counted(
    post_webhook: PostWebhook,
    queued: list[int],
    django_capture_on_commit_callbacks: Any,
    django_assert_num_queries: Any,
) -> Any:
    """POST a payload, counting the request's queries (always REQUEST), then fan the
    delivery out counting the worker's."""

    def post(payload: dict[str, Any], *, queries: int) -> None:
        with django_assert_num_queries(REQUEST):
            answer = post_webhook(payload)
        assert answer.status_code == 200
        with (
            django_capture_on_commit_callbacks(execute=False),
            django_assert_num_queries(queries),
        ):
            delivery_fan_out(queued[-1])

    return post


def senders(count: int) -> list[str]:
    return [f"1555000{i:04d}" for i in range(count)]


def test_a_message_from_a_known_sender(post_counted: Any) -> None:
    identity_resolve(wa_id="15550000000", bsuid=None)
    post_counted(
        wa.webhook_payload([wa.message_event(wa_id="15550000000")]),
        queries=PER_DELIVERY + PER_MESSAGE_FROM_A_KNOWN_SENDER,
    )
    assert InboundMessage.objects.count() == 1
    assert EndUser.objects.count() == 1


def test_a_message_from_a_new_sender(post_counted: Any) -> None:
    post_counted(
        wa.webhook_payload([wa.message_event(wa_id="15550000000")]),
        queries=PER_DELIVERY + PER_MESSAGE_FROM_A_NEW_SENDER,
    )
    assert InboundMessage.objects.get().identity.wa_id == "15550000000"


def test_a_redelivery_costs_the_same_however_many_messages_it_carries(
    post_counted: Any,
) -> None:
    payload = wa.webhook_payload([wa.message_event(wa_id=wa_id) for wa_id in senders(10)])
    post_counted(payload, queries=PER_DELIVERY + 10 * PER_MESSAGE_FROM_A_NEW_SENDER)
    post_counted(payload, queries=REDELIVERY)
    assert WebhookDelivery.objects.count() == 2
    assert InboundMessage.objects.count() == 10


def test_a_single_redelivered_message(post_counted: Any) -> None:
    payload = wa.webhook_payload([wa.message_event()])
    post_counted(payload, queries=PER_DELIVERY + PER_MESSAGE_FROM_A_NEW_SENDER)
    post_counted(payload, queries=REDELIVERY)
    assert InboundMessage.objects.count() == 1


def test_a_batch_from_ten_new_senders(post_counted: Any) -> None:
    events = [wa.message_event(wa_id=wa_id) for wa_id in senders(10)]
    post_counted(
        wa.webhook_payload(events),
        queries=PER_DELIVERY + 10 * PER_MESSAGE_FROM_A_NEW_SENDER,
    )
    assert InboundMessage.objects.count() == 10
    assert EndUser.objects.count() == 10


def test_a_batch_from_ten_known_senders(post_counted: Any) -> None:
    for wa_id in senders(10):
        identity_resolve(wa_id=wa_id, bsuid=None)
    events = [wa.message_event(wa_id=wa_id) for wa_id in senders(10)]
    post_counted(
        wa.webhook_payload(events),
        queries=PER_DELIVERY + 10 * PER_MESSAGE_FROM_A_KNOWN_SENDER,
    )
    assert InboundMessage.objects.count() == 10
    assert EndUser.objects.count() == 10


def test_the_request_only_keeps_the_delivery_and_queues_its_fan_out(
    post_webhook: PostWebhook, queued: list[int], django_assert_num_queries: Any
) -> None:
    payload = wa.webhook_payload([wa.message_event(wa_id=wa_id) for wa_id in senders(3)])
    with django_assert_num_queries(REQUEST):
        assert post_webhook(payload).status_code == 200
    delivery = WebhookDelivery.objects.get()
    assert queued == [delivery.pk]
    assert (delivery.object, delivery.processed_at) == ("whatsapp_business_account", None)
    assert not InboundMessage.objects.exists()


def test_the_kept_delivery_is_the_row_save_would_write() -> None:
    # The request's INSERT skips Model.save; the row must be the one save() writes, every
    # column (a field added to the model is written too, or this fails).
    before = timezone.now()
    raw = json.dumps({"object": "whatsapp_business_account", "entry": ["São Paulo 🌤"]})
    kept = webhook_accept(raw_body=raw.encode(), payload=json.loads(raw))
    saved = WebhookDelivery(object="whatsapp_business_account", raw_body=raw)
    saved.save()
    stored = WebhookDelivery.objects.get(pk=kept.pk)
    assert before <= stored.received_at <= saved.received_at
    assert stored.received_at == kept.received_at
    assert not kept._state.adding
    fields = [f.attname for f in WebhookDelivery._meta.concrete_fields]
    compared = [name for name in fields if name not in ("id", "received_at")]
    assert len(compared) > 4

    def row(delivery: WebhookDelivery) -> dict[str, Any]:
        return {name: getattr(delivery, name) for name in compared}

    assert row(stored) == row(saved) == row(kept)
    assert stored.raw_body == raw


def test_rows_the_fan_out_inserts_are_the_rows_save_would_write() -> None:
    # The fan-out's message rows skip Model.save too (audit.toolkit.insert_row).
    end_user = EndUser.objects.create()
    identity = WhatsAppIdentity.objects.create(end_user=end_user, wa_id="15550001111")
    delivery = webhook_accept(raw_body=b"{}", payload={})
    sent_at = timezone.now()

    def user_message(wamid: str) -> UserMessage:
        return UserMessage(
            end_user=end_user, channel=Channel.WHATSAPP, kind="text", external_id=wamid,
            text="Olá 🌤", sent_at=sent_at,
        )  # fmt: skip

    def inbound(wamid: str, message: UserMessage) -> InboundMessage:
        return InboundMessage(
            wamid=wamid, delivery=delivery, identity=identity, user_message=message,
            type="text", phone_number_id="123", sent_at=sent_at,
            raw={"text": {"body": "Olá 🌤"}, "n": [1, 2.5, None]},
        )  # fmt: skip

    inserted, saved = user_message("wamid.a"), user_message("wamid.b")
    insert_row(inserted)
    saved.save()
    inserted_inbound, saved_inbound = inbound("wamid.a", inserted), inbound("wamid.b", saved)
    insert_row(inserted_inbound)
    saved_inbound.save()
    for model, pair in (
        (UserMessage, (inserted, saved)),
        (InboundMessage, (inserted_inbound, saved_inbound)),
    ):
        skip = {"id", "created_at", "updated_at", "external_id", "wamid", "user_message_id"}
        names = [f.attname for f in model._meta.concrete_fields if f.attname not in skip]
        assert len(names) > 5
        rows = [model.objects.values(*names).get(pk=instance.pk) for instance in pair]
        assert rows[0] == rows[1]
        assert not pair[0]._state.adding
        stored = model.objects.get(pk=pair[0].pk)
        assert stored.created_at is not None
        assert getattr(stored, "updated_at", stored.created_at) is not None


@pytest.mark.parametrize(
    "model",
    [
        WebhookDelivery,
        UserMessage,
        InboundMessage,
        OutboundMessage,
        Turn,
        Conversation,
        ProcessingLease,
    ],
)
def test_models_written_without_save_have_no_signal_receivers(model: type) -> None:
    # insert_row, update_row and the hot paths' plain UPDATEs send no model signals: a
    # receiver added for one of these models would silently never run.
    for signal in (signals.pre_save, signals.post_save):
        assert not signal.has_listeners(model), f"{signal} has a receiver for {model}"


def test_a_fan_out_repeated_stores_nothing_twice(
    post_counted: Any, queued: list[int], django_assert_num_queries: Any
) -> None:
    post_counted(
        wa.webhook_payload([wa.message_event()]),
        queries=PER_DELIVERY + PER_MESSAGE_FROM_A_NEW_SENDER,
    )
    with django_assert_num_queries(FANNED_OUT_ALREADY):
        assert delivery_fan_out(queued[-1]) == []
    delivery = WebhookDelivery.objects.get()
    assert (delivery.message_count, delivery.status_count) == (1, 0)
    assert delivery.processed_at is not None
    assert InboundMessage.objects.count() == 1


def _outbound(count: int) -> list[OutboundMessage]:
    identity = identity_resolve(wa_id="15550000000", bsuid=None)
    message = UserMessage.objects.create(
        end_user_id=identity.end_user_id, channel=Channel.WHATSAPP, sent_at="2026-01-01T00:00Z"
    )
    return [
        OutboundMessage.objects.create(
            user_message=message, part=part, wamid=f"wamid.OUT{part}", recipient="15550000000"
        )
        for part in range(count)
    ]


@pytest.mark.parametrize("count", [3, 10])
def test_statuses_are_read_and_written_in_one_query_each(post_counted: Any, count: int) -> None:
    outbound = _outbound(count)
    statuses = [wa.status_event(str(message.wamid), "delivered") for message in outbound]
    post_counted(wa.webhook_payload(statuses=statuses), queries=STATUS_WEBHOOK)
    assert set(OutboundMessage.objects.values_list("status", flat=True)) == {"delivered"}


def test_statuses_for_one_message_in_one_webhook_still_only_move_forward(
    post_counted: Any,
) -> None:
    (outbound,) = _outbound(1)
    errors = [{"code": 131047, "title": "Re-engagement message"}]
    statuses = [
        wa.status_event(str(outbound.wamid), "delivered", timestamp=2),
        wa.status_event(str(outbound.wamid), "sent", timestamp=1),
        wa.status_event(str(outbound.wamid), "failed", timestamp=3, errors=errors),
        wa.status_event(str(outbound.wamid), "read", timestamp=4),
        wa.status_event("wamid.UNKNOWN", "read", timestamp=4),
    ]
    post_counted(wa.webhook_payload(statuses=statuses), queries=STATUS_WEBHOOK)
    outbound.refresh_from_db()
    assert (outbound.status, outbound.errors) == ("failed", errors)
    assert outbound.status_at is not None
    assert outbound.status_at.timestamp() == 3


@pytest.mark.parametrize(
    ("incoming", "expected"),
    [
        (["delivered"], "delivered"),
        (["sent", "read", "delivered"], "read"),
        (["failed", "read"], "failed"),
    ],
)
def test_statuses_for_one_message_are_one_conditional_update(
    post_counted: Any, incoming: list[str], expected: str
) -> None:
    (outbound,) = _outbound(1)
    statuses = [
        wa.status_event(str(outbound.wamid), status, timestamp=n)
        for n, status in enumerate(incoming, start=1)
    ]
    post_counted(wa.webhook_payload(statuses=statuses), queries=ONE_MESSAGE_STATUS_WEBHOOK)
    outbound.refresh_from_db()
    assert outbound.status == expected
    assert outbound.status_at is not None
    assert outbound.status_at.timestamp() == incoming.index(expected) + 1


def test_a_stale_or_unknown_status_changes_nothing(post_counted: Any) -> None:
    (outbound,) = _outbound(1)
    OutboundMessage.objects.filter(pk=outbound.pk).update(status="read")
    for wamid in (str(outbound.wamid), "wamid.UNKNOWN"):
        statuses = [wa.status_event(wamid, "delivered")]
        post_counted(wa.webhook_payload(statuses=statuses), queries=ONE_MESSAGE_STATUS_WEBHOOK)
    outbound.refresh_from_db()
    assert (outbound.status, outbound.status_at) == ("read", None)


# --- what the savings must keep: concurrent deliveries ------------------------------------


@pytest.mark.django_db(transaction=True)
def test_overlapping_batches_from_new_senders_at_once_store_each_message_once(
    django_capture_on_commit_callbacks: Any,
) -> None:
    events = [wa.message_event(wa_id=wa_id) for wa_id in senders(6)]
    bodies = [wa.encode(wa.webhook_payload(events[start : start + 4])) for start in (0, 1, 2)]
    with django_capture_on_commit_callbacks(execute=False):
        assert at_once(*[partial(webhook_deliver, body) for body in bodies]) == [200, 200, 200]
    assert InboundMessage.objects.count() == 6
    assert EndUser.objects.count() == 6
    assert sorted(str(i.wa_id) for i in WhatsAppIdentity.objects.all()) == senders(6)


@pytest.mark.django_db(transaction=True)
def test_statuses_at_once_in_opposite_orders_only_move_forward(
    django_capture_on_commit_callbacks: Any,
) -> None:
    first, second = _outbound(2)
    # Each delivery names both messages, in opposite orders: locking them one by one in
    # payload order could deadlock.
    bodies = [
        wa.encode(
            wa.webhook_payload(
                statuses=[
                    wa.status_event(str(first.wamid), "read"),
                    wa.status_event(str(second.wamid), "delivered"),
                ]
            )
        ),
        wa.encode(
            wa.webhook_payload(
                statuses=[
                    wa.status_event(str(second.wamid), "read"),
                    wa.status_event(str(first.wamid), "delivered"),
                ]
            )
        ),
    ]
    with django_capture_on_commit_callbacks(execute=False):
        assert at_once(*[partial(webhook_deliver, body) for body in bodies]) == [200, 200]
    assert set(OutboundMessage.objects.values_list("status", flat=True)) == {"read"}
