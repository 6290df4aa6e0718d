"""The webhook keeps the delivery and queues its fan-out; the worker stores what it
carries. What that split must keep: nothing lost when the queue or the worker fails,
nothing stored twice when the fan-out runs twice, and recovery of a lost fan-out."""

import time
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from django.db import OperationalError
from django.utils import timezone

from multichannel.models import UserMessage
from multichannel.sandbox import whatsapp as wa
from multichannel.tasks import recover_after_start, recover_unfinished
from tests.support.outgoing import sent_texts
from tests.support.threads import at_once
from tests.support.webhooks import PostWebhook
from whatsapp import services, tasks
from whatsapp.models import InboundMessage, WebhookDelivery
from whatsapp.payload import parse_webhook
from whatsapp.services import delivery_fan_out
from whatsapp.tasks import webhook_fan_out as fan_out_task  # `queue_down` patches tasks'

pytestmark = pytest.mark.django_db


def _age_deliveries(by: timedelta) -> None:
    WebhookDelivery.objects.update(received_at=timezone.now() - by)


def _unreachable(*args: object) -> None:
    raise ConnectionError("queue unreachable")


@pytest.fixture
def queue_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "webhook_fan_out", _unreachable)


def test_a_queue_outage_still_acknowledges_and_recovery_fans_out_and_answers(
    post_webhook: PostWebhook,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(tasks, "webhook_fan_out", _unreachable)
        response = post_webhook(wa.webhook_payload([wa.message_event(text="queue was down")]))
    # Kept before the 200: Meta must not redeliver, and nothing is lost.
    assert response.status_code == 200
    assert "could not queue webhook" in caplog.text
    assert WebhookDelivery.objects.get().processed_at is None
    assert not InboundMessage.objects.exists()

    # The periodic recovery leaves a young delivery to its task...
    assert recover_unfinished.call_local() == 0
    assert not InboundMessage.objects.exists()
    # ...and queues it once it is past the grace.
    _age_deliveries(tasks.RECOVERY_GRACE + timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert recover_unfinished.call_local() >= 1
    assert WebhookDelivery.objects.get().processed_at is not None
    assert sent_texts() == ["You said: queue was down"]
    assert recover_unfinished.call_local() == 0


def test_a_starting_consumer_fans_out_every_kept_delivery_at_once(
    post_webhook: PostWebhook, queue_down: None, django_capture_on_commit_callbacks: Any
) -> None:
    for text in ("first", "second"):
        event = wa.message_event(text=text, message_id=f"wamid.{text}")
        assert post_webhook(wa.webhook_payload([event])).status_code == 200
    assert WebhookDelivery.objects.filter(processed_at=None).count() == 2
    tasks_queued: list[int] = []
    original = services.delivery_fan_out

    def spy(delivery_id: int) -> Any:
        tasks_queued.append(delivery_id)
        return original(delivery_id)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tasks, "webhook_fan_out", spy)
        with django_capture_on_commit_callbacks(execute=True):
            recover_after_start.call_local()
    # One task, for the newest: it fans out the older one first.
    assert tasks_queued == [WebhookDelivery.objects.latest("pk").pk]
    assert not WebhookDelivery.objects.filter(processed_at=None).exists()
    assert sorted(UserMessage.objects.values_list("text", flat=True)) == ["first", "second"]


def test_a_fan_out_that_fails_stores_nothing_and_a_later_one_stores_it_all(
    post_webhook: PostWebhook, queue_down: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [wa.message_event(wa_id=f"1555000000{n}", text=f"m{n}") for n in range(3)]
    assert post_webhook(wa.webhook_payload(events)).status_code == 200
    delivery = WebhookDelivery.objects.get()
    calls = 0
    original = services._inbound_message_insert

    def fails_on_the_third(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OperationalError("database is locked")
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(services, "_inbound_message_insert", fails_on_the_third)
        with pytest.raises(OperationalError):
            delivery_fan_out(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.processed_at is None
    assert not UserMessage.objects.exists()

    (result,) = delivery_fan_out(delivery.pk)
    assert (result.stored, result.duplicates) == (3, 0)
    delivery.refresh_from_db()
    assert (delivery.message_count, delivery.processed_at is not None) == (3, True)


def test_a_delivery_blanked_by_an_erasure_before_its_fan_out_carries_nothing(
    post_webhook: PostWebhook, queue_down: None
) -> None:
    assert post_webhook(wa.webhook_payload([wa.message_event()])).status_code == 200
    WebhookDelivery.objects.update(raw_body="")
    (result,) = delivery_fan_out(WebhookDelivery.objects.get().pk)
    assert (result.stored, result.statuses_applied) == (0, 0)
    assert WebhookDelivery.objects.get().processed_at is not None
    assert not UserMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_one_delivery_fanned_out_by_three_workers_at_once_is_stored_once(
    post_webhook: PostWebhook,
    queue_down: None,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = [wa.message_event(wa_id=f"1555000000{n}", text=f"m{n}") for n in range(4)]
    assert post_webhook(wa.webhook_payload(events)).status_code == 200
    delivery_id = WebhookDelivery.objects.get().pk
    parsed: list[object] = []
    original = parse_webhook

    def parse_counted(*args: Any, **kwargs: Any) -> Any:
        parsed.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr("whatsapp.services.parse_webhook", parse_counted)
    with django_capture_on_commit_callbacks(execute=False):
        results = at_once(*[partial(delivery_fan_out, delivery_id)] * 3)
    # Claimed before it is parsed: the workers that lost the race parsed nothing.
    assert len(parsed) == 1
    assert [type(result) for result in results if isinstance(result, BaseException)] == []
    stored = [result for fanned_out in results for result in fanned_out]
    assert len(stored) == 1
    assert stored[0].stored == 4
    assert InboundMessage.objects.count() == 4


def test_a_delivery_fanned_out_first_stores_those_kept_before_it_first(
    post_webhook: PostWebhook, queue_down: None, django_capture_on_commit_callbacks: Any
) -> None:
    # One user's two messages, each acknowledged before the next was sent; the second's
    # task runs first (another worker thread took it sooner).
    now = int(timezone.now().timestamp())
    for n in (1, 2):
        event = wa.message_event(text=f"m{n}", message_id=f"wamid.m{n}", timestamp=now)
        assert post_webhook(wa.webhook_payload([event])).status_code == 200
    first, second = WebhookDelivery.objects.order_by("pk")
    with django_capture_on_commit_callbacks(execute=True):
        results = delivery_fan_out(second.pk)
    assert [result.delivery_id for result in results] == [first.pk, second.pk]
    assert list(UserMessage.objects.order_by("pk").values_list("text", flat=True)) == ["m1", "m2"]
    assert sent_texts() == ["You said: m1", "You said: m2"]
    assert delivery_fan_out(first.pk) == []


def test_a_delivery_that_cannot_be_fanned_out_is_set_aside_and_holds_up_nothing(
    post_webhook: PostWebhook,
    queue_down: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prometheus_client import REGISTRY

    for text in ("poison", "fine"):
        event = wa.message_event(wa_id="15550000001", text=text, message_id=f"wamid.{text}")
        assert post_webhook(wa.webhook_payload([event])).status_code == 200
    poison, fine = WebhookDelivery.objects.order_by("pk")
    original = services._inbound_message_insert

    def fails_on_poison(delivery: Any, message: Any, **kwargs: Any) -> Any:
        if message.text == "poison":
            raise ValueError("no column takes this")
        return original(delivery, message, **kwargs)

    before = REGISTRY.get_sample_value("multichannel_webhook_deliveries_set_aside_total") or 0
    monkeypatch.setattr(services, "_inbound_message_insert", fails_on_poison)
    (result,) = delivery_fan_out(fine.pk)
    assert (result.delivery_id, result.stored) == (fine.pk, 1)
    assert list(UserMessage.objects.values_list("text", flat=True)) == ["fine"]
    poison.refresh_from_db()
    assert poison.processed_at is not None
    assert poison.fan_out_error == "ValueError: no column takes this"
    assert f"webhook {poison.pk} could not be fanned out; set aside" in caplog.text
    after = REGISTRY.get_sample_value("multichannel_webhook_deliveries_set_aside_total")
    assert after == before + 1
    # Not waiting any more: recovery leaves it to the operator.
    _age_deliveries(tasks.RECOVERY_GRACE + timedelta(seconds=1))
    assert tasks.deliveries_recover(starting=True) == 0


def test_the_database_away_in_a_fan_out_leaves_every_delivery_waiting(
    post_webhook: PostWebhook, queue_down: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for text in ("first", "second"):
        event = wa.message_event(text=text, message_id=f"wamid.{text}")
        assert post_webhook(wa.webhook_payload([event])).status_code == 200

    def database_away(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(services, "_inbound_message_insert", database_away)
    with pytest.raises(OperationalError):
        delivery_fan_out(WebhookDelivery.objects.latest("pk").pk)
    assert WebhookDelivery.objects.filter(processed_at=None, fan_out_error="").count() == 2


def test_the_admin_lists_the_deliveries_set_aside(
    post_webhook: PostWebhook, queue_down: None
) -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    for text in ("kept", "failed"):
        assert post_webhook(wa.webhook_payload([wa.message_event(text=text)])).status_code == 200
    _kept, failed = WebhookDelivery.objects.order_by("pk")
    WebhookDelivery.objects.filter(pk=failed.pk).update(
        processed_at=timezone.now(), fan_out_error="ValueError: no column takes this"
    )
    browser = Client()
    browser.force_login(User.objects.create_superuser("root", "r@example.test", "x-Long-pw-123"))
    page = browser.get("/admin/whatsapp/webhookdelivery/", {"fan_out": "set_aside"})
    assert page.status_code == 200
    shown = [row.pk for row in page.context["cl"].result_list]
    assert shown == [failed.pk]


@pytest.mark.django_db(transaction=True)
def test_fan_outs_in_one_process_run_one_at_a_time(
    post_webhook: PostWebhook,
    queue_down: None,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    for n in range(3):
        event = wa.message_event(wa_id=f"1555000000{n}", text=f"m{n}")
        assert post_webhook(wa.webhook_payload([event])).status_code == 200
    inside: list[int] = []
    overlapped: list[int] = []
    original = services._delivery_store

    def store_slowly(pk: int, **kwargs: Any) -> Any:
        if inside:
            overlapped.append(pk)
        inside.append(pk)
        time.sleep(0.05)
        try:
            return original(pk, **kwargs)
        finally:
            inside.remove(pk)

    monkeypatch.setattr(services, "_delivery_store", store_slowly)
    deliveries = list(WebhookDelivery.objects.order_by("pk").values_list("pk", flat=True))
    with django_capture_on_commit_callbacks(execute=False):
        results = at_once(*[partial(delivery_fan_out, pk) for pk in reversed(deliveries)])
    assert overlapped == []
    assert sorted(result.delivery_id for fanned in results for result in fanned) == deliveries


@pytest.fixture
def users_queued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The people whose answering the fan-out queued as a task (not run here)."""
    import multichannel.tasks

    queued: list[str] = []
    monkeypatch.setattr(multichannel.tasks, "_queue_end_user", queued.append)
    return queued


def test_the_fan_out_task_answers_its_own_sender_itself_and_queues_the_rest(
    post_webhook: PostWebhook,
    queue_down: None,
    users_queued: list[str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    # An older delivery still waiting (from A), then the task's own (from B).
    for sender, text in (("15550000001", "from A"), ("15550000002", "from B")):
        event = wa.message_event(wa_id=sender, text=text)
        assert post_webhook(wa.webhook_payload([event])).status_code == 200
    _older, own = WebhookDelivery.objects.order_by("pk")
    with django_capture_on_commit_callbacks(execute=True):
        assert fan_out_task.call_local(own.pk) == 2
    a = UserMessage.objects.get(text="from A")
    b = UserMessage.objects.get(text="from B")
    # B's message was answered and sent by the fan-out's own thread, no task queued...
    assert b.state == UserMessage.State.DELIVERED
    assert sent_texts() == ["You said: from B"]
    # ...A's (an older delivery's) was queued as before.
    assert users_queued == [a.end_user_id]
    assert a.state == UserMessage.State.QUEUED


def test_a_delivery_from_two_senders_queues_both(
    post_webhook: PostWebhook,
    queue_down: None,
    users_queued: list[str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    events = [wa.message_event(wa_id=f"1555000000{n}", text=f"m{n}") for n in (1, 2)]
    assert post_webhook(wa.webhook_payload(events)).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        fan_out_task.call_local(WebhookDelivery.objects.get().pk)
    assert sorted(users_queued) == sorted(UserMessage.objects.values_list("end_user_id", flat=True))
    assert sent_texts() == []


def test_answering_that_fails_in_the_fan_out_task_is_queued_to_be_tried_again(
    post_webhook: PostWebhook,
    queue_down: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    import multichannel.tasks

    assert post_webhook(wa.webhook_payload([wa.message_event(text="hi")])).status_code == 200

    def database_away(**kwargs: Any) -> Any:
        raise OperationalError("could not connect to server")

    scheduled: list[tuple[Any, Any]] = []
    monkeypatch.setattr(multichannel.tasks, "user_messages_process", database_away)
    monkeypatch.setattr(
        multichannel.tasks.process_end_user,
        "schedule",
        lambda args, **kwargs: scheduled.append((args, kwargs)),
    )
    with django_capture_on_commit_callbacks(execute=True):
        # The fan-out itself succeeded: its task must not fail (and be retried) for it.
        assert fan_out_task.call_local(WebhookDelivery.objects.get().pk) == 1
    message = UserMessage.objects.get()
    assert message.state == UserMessage.State.QUEUED
    retry = {"delay": multichannel.tasks.PROCESS_RETRY_DELAY}
    assert scheduled == [((message.end_user_id,), retry)]
    assert f"end user {message.end_user_id}: answering failed; queued again" in caplog.text
