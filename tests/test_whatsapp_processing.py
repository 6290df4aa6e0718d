"""From a stored WhatsApp message to exactly one stored response, audit event and reply,
in order, whatever fails transiently or crashes in between."""

import itertools
from datetime import timedelta
from functools import partial

import pytest
import requests
from django.db import OperationalError
from django.utils import timezone

from audit.models import AuditEvent
from multichannel import mka1, processing
from multichannel.models import Conversation, ProcessingLease, Turn, UserMessage
from multichannel.sandbox import whatsapp as wa
from multichannel.sandbox.faults import fault_inject
from multichannel.sandbox.models import SandboxGraphMessage
from multichannel.sandbox.transport import InProcessAdapter
from multichannel.tasks import process_end_user, recover_unfinished
from tests.support.outgoing import Calls, response_creates, sent_texts
from tests.support.threads import at_once
from tests.support.webhooks import PostWebhook, webhook_deliver
from whatsapp.models import InboundMessage, OutboundMessage

pytestmark = pytest.mark.django_db


class WorkerKilled(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing on the way catches it."""


@pytest.fixture
def receive(post_webhook: PostWebhook, django_capture_on_commit_callbacks):
    """Deliver a webhook and let the queued task run (Huey immediate mode)."""

    def receive(*events: dict, run: bool = True) -> None:
        with django_capture_on_commit_callbacks(execute=run):
            assert post_webhook(wa.webhook_payload(list(events))).status_code == 200

    return receive


def run_due_work() -> None:
    """Let time pass: every retry is due and every lease has expired; run recovery."""
    past = timezone.now() - timedelta(seconds=1)
    UserMessage.objects.exclude(next_attempt_at=None).update(next_attempt_at=past)
    ProcessingLease.objects.update(expires_at=past)
    recover_unfinished.call_local()


def the_message() -> UserMessage:
    return UserMessage.objects.get()


# --- the happy path --------------------------------------------------------------------


def test_a_signed_webhook_becomes_one_response_one_audit_event_one_reply(
    receive, mka1_calls: Calls
) -> None:
    event = wa.message_event(wa_id="15557654321", text="What is MKA1?")
    receive(event)
    message = the_message()
    assert message.state == UserMessage.State.DELIVERED
    turn = Turn.objects.get()
    assert message.turn == turn
    (create,) = response_creates(mka1_calls)
    assert create["metadata"] == {"message_id": event["message"]["id"], "channel": "whatsapp"}
    assert create["store"] is True
    audit = AuditEvent.objects.get(action="responses.create")
    assert (audit.channel, audit.end_user_id) == ("whatsapp", message.end_user_id)
    assert audit.response_id == turn.response_id
    assert audit.conversation_id == Conversation.objects.get().mka1_conversation_id
    assert audit.context["whatsapp_message_id"] == event["message"]["id"]
    assert audit.api_key_fingerprint == mka1.client().key_fingerprint
    assert sent_texts("15557654321") == ["You said: What is MKA1?"]
    outbound = OutboundMessage.objects.get()
    assert outbound.wamid == SandboxGraphMessage.objects.get(kind="text").wamid
    # The user's message was marked read, with "typing…" while MKA1 worked.
    read = SandboxGraphMessage.objects.get(kind="typing")
    assert read.body["status"] == "read"
    assert read.body["message_id"] == event["message"]["id"]
    assert read.body["typing_indicator"] == {"type": "text"}
    assert read.id < SandboxGraphMessage.objects.get(kind="text").id  # before the reply


def test_the_conversation_is_reused_and_the_chain_is_linear(receive, mka1_calls: Calls) -> None:
    for text in ("one", "two", "three"):
        receive(wa.message_event(text=text))
    creates = response_creates(mka1_calls)
    conversations = {body["conversation"] for body in creates}
    assert len(conversations) == 1
    assert [(m, p) for m, p, _ in mka1_calls if p == "/conversations"] == [
        ("POST", "/conversations")
    ]
    turns = list(Turn.objects.order_by("id"))
    assert [t.previous_response_id for t in turns] == [
        None,
        turns[0].response_id,
        turns[1].response_id,
    ]
    assert "previous_response_id" not in creates[0]
    assert creates[2]["previous_response_id"] == turns[1].response_id


def test_a_burst_from_one_user_is_answered_in_the_order_sent(receive, mka1_calls: Calls) -> None:
    base = int(timezone.now().timestamp())
    events = [wa.message_event(text=f"m{i}", timestamp=base + i) for i in range(5)]
    receive(*reversed(events))  # arrival order differs from sending order
    assert sent_texts() == [f"You said: m{i}" for i in range(5)]
    assert [body["input"] for body in response_creates(mka1_calls)] == [f"m{i}" for i in range(5)]
    turns = list(Turn.objects.order_by("id"))
    for earlier, later in itertools.pairwise(turns):
        assert later.previous_response_id == earlier.response_id


def test_same_second_messages_keep_their_arrival_order(receive) -> None:
    events = [wa.message_event(text=f"same {i}", timestamp=1_800_000_000) for i in range(3)]
    receive(*events)
    assert sent_texts() == [f"You said: same {i}" for i in range(3)]


def test_a_long_reply_is_split_and_sent_in_order(receive, monkeypatch) -> None:
    sentence = "This sentence is exactly fifty characters long ok. "
    monkeypatch.setattr(
        "multichannel.sandbox.mka1_views.reply_text", lambda text: (sentence * 200).strip()
    )
    receive(wa.message_event(text="tell me a lot"))
    parts = sent_texts()
    assert len(parts) == 3
    assert all(len(part) <= 4096 for part in parts)
    assert all(part.endswith(".") for part in parts)  # cut at sentence ends
    assert " ".join(parts) == (sentence * 200).strip()
    # Created as each part was accepted: in id order, the parts are in sending order.
    assert list(OutboundMessage.objects.order_by("id").values_list("part", flat=True)) == [0, 1, 2]


# --- MKA1 failures -----------------------------------------------------------------------


def test_mka1_500_then_success_gives_one_reply(
    receive, mka1_calls: Calls, no_backoff_sleep
) -> None:
    fault_inject("responses.create", status=500, times=2)
    receive(wa.message_event(text="flaky"))
    assert the_message().state == UserMessage.State.DELIVERED
    assert len(no_backoff_sleep) == 2  # retried inside the client
    assert Turn.objects.count() == 1
    assert sent_texts() == ["You said: flaky"]


def test_mka1_429_is_retried_after_the_time_it_asks_for(receive, no_backoff_sleep) -> None:
    fault_inject(
        "responses.create",
        status=429,
        headers={"Retry-After": "2"},
        body={"error": {"message": "Rate limit", "type": "rate_limit_error"}},
    )
    receive(wa.message_event(text="busy"))
    assert 2.0 in no_backoff_sleep
    assert sent_texts() == ["You said: busy"]


def test_mka1_failing_past_the_client_retries_is_retried_later_by_the_queue(
    receive, mka1_calls: Calls
) -> None:
    fault_inject("responses.create", status=503, times=4)  # 1 try + 3 client retries
    receive(wa.message_event(text="later"))
    message = the_message()
    assert message.state == UserMessage.State.QUEUED
    assert message.attempts == 1
    assert message.next_attempt_at is not None
    assert sent_texts() == []
    recover_unfinished.call_local()  # not due yet: nothing happens
    assert sent_texts() == []
    run_due_work()
    assert the_message().state == UserMessage.State.DELIVERED
    assert sent_texts() == ["You said: later"]
    assert Turn.objects.count() == 1


def test_mka1_timeout_is_retried_without_a_second_reply(
    receive, mka1_calls: Calls, monkeypatch
) -> None:
    original = InProcessAdapter.send
    timeouts = iter([True])

    def send(self, request, **kwargs):
        if (
            request.method == "POST"
            and request.url.endswith("/responses")
            and next(timeouts, False)
        ):
            raise requests.ReadTimeout("read timed out")
        return original(self, request, **kwargs)

    monkeypatch.setattr(InProcessAdapter, "send", send)
    receive(wa.message_event(text="slow"))
    assert the_message().state == UserMessage.State.QUEUED  # a POST is not repeated blindly
    run_due_work()
    assert the_message().state == UserMessage.State.DELIVERED
    assert sent_texts() == ["You said: slow"]
    assert len(response_creates(mka1_calls)) == 2


def test_mka1_conversation_busy_is_transient(receive) -> None:
    fault_inject(
        "responses.create",
        status=409,
        times=4,
        body={"error": {"message": "Conversation is locked", "code": "conversation_locked"}},
    )
    receive(wa.message_event(text="wait"))
    assert the_message().state == UserMessage.State.QUEUED
    run_due_work()
    assert sent_texts() == ["You said: wait"]


def test_mka1_400_gets_an_apology_and_an_audited_failure(receive, mka1_calls: Calls) -> None:
    error = {"error": {"message": "Invalid model", "type": "invalid_request_error"}}
    fault_inject("responses.create", status=400, body=error)
    receive(wa.message_event(text="bad"))
    message = the_message()
    assert message.state == UserMessage.State.DELIVERED
    assert "HTTP 400" in message.error
    assert len(response_creates(mka1_calls)) == 1  # a 4xx is never retried
    assert sent_texts() == [
        "Sorry, something went wrong answering that. Please try again in a moment."
    ]
    failure = AuditEvent.objects.get(action="responses.create.failed")
    assert failure.channel == "whatsapp"
    assert failure.end_user_id == message.end_user_id
    assert (
        failure.full_response
        == '{"error":{"message":"Invalid model","type":"invalid_request_error"}}'
    )
    assert failure.context["status"] == 400
    assert not Turn.objects.exists()
    assert Conversation.objects.get().previous_response_id is None


def test_mka1_failing_transiently_for_too_long_ends_in_an_apology(receive, settings) -> None:
    settings.TURN_MAX_ATTEMPTS = 2
    fault_inject("responses.create", status=503, times=100)
    receive(wa.message_event(text="never"))
    run_due_work()
    message = the_message()
    assert message.state == UserMessage.State.DELIVERED
    assert sent_texts() == [
        "Sorry, something went wrong answering that. Please try again in a moment."
    ]
    # Every failed call is an audit event; the last one says the message was given up on.
    failures = AuditEvent.objects.filter(action="responses.create.failed").order_by("sequence")
    assert [(e.context["attempt"], e.context["gave_up"]) for e in failures] == [
        (1, False),
        (2, True),
    ]
    assert {e.context["status"] for e in failures} == {503}


# --- Graph API failures -------------------------------------------------------------------


def test_graph_500_then_success_sends_once_without_asking_mka1_again(
    receive, mka1_calls: Calls
) -> None:
    # "typing…" (one attempt: cosmetic), then the mark-read's first try; the send works.
    fault_inject("graph.messages", status=500, times=2)
    receive(wa.message_event(text="deliver me"))
    assert sent_texts() == ["You said: deliver me"]
    assert len(response_creates(mka1_calls)) == 1


def test_graph_failing_for_long_is_retried_later_without_mka1(receive, mka1_calls: Calls) -> None:
    # "typing…" (1), mark-read (4 with its retries), send (4): past the client's retries.
    fault_inject("graph.messages", status=503, times=9)
    receive(wa.message_event(text="eventually"))
    message = the_message()
    assert message.state == UserMessage.State.ANSWERED
    assert message.reply_text == "You said: eventually"
    run_due_work()
    assert the_message().state == UserMessage.State.DELIVERED
    assert sent_texts() == ["You said: eventually"]
    assert len(response_creates(mka1_calls)) == 1


@pytest.mark.parametrize("code", [130429, 131056])
def test_graph_rate_limits_are_retried_later(receive, code: int) -> None:
    body = {"error": {"message": "Rate limit hit", "code": code}}
    fault_inject("graph.messages", status=400, body=body, times=3)  # typing, mark-read, send
    receive(wa.message_event(text="throttled"))
    assert the_message().state == UserMessage.State.ANSWERED
    run_due_work()
    assert sent_texts() == ["You said: throttled"]


def test_graph_permanent_failure_is_recorded_and_not_retried(receive) -> None:
    body = {"error": {"message": "Re-engagement message", "code": 131047}}
    fault_inject("graph.messages", status=400, body=body, times=3)  # typing, mark-read, send
    receive(wa.message_event(text="too late"))
    message = the_message()
    assert message.state == UserMessage.State.FAILED
    assert "131047" in message.error
    outbound = OutboundMessage.objects.get()
    assert outbound.status == OutboundMessage.Status.FAILED
    assert outbound.errors == [body]
    run_due_work()
    assert sent_texts() == []


def test_a_waiting_reply_holds_back_the_users_later_messages(receive) -> None:
    fault_inject("graph.messages", status=503, times=9)  # typing, mark-read x4, send x4
    base = int(timezone.now().timestamp())
    receive(wa.message_event(text="first", timestamp=base))
    receive(wa.message_event(text="second", timestamp=base + 1))
    states = list(UserMessage.objects.order_by("sent_at").values_list("state", flat=True))
    assert states == [UserMessage.State.ANSWERED, UserMessage.State.QUEUED]
    run_due_work()
    assert sent_texts() == ["You said: first", "You said: second"]


def test_a_reply_the_graph_api_accepted_is_recorded_through_a_locked_database(
    receive, monkeypatch, no_backoff_sleep: list[float]
) -> None:
    from django.db import OperationalError

    from whatsapp import delivery

    original = delivery._outbound_keep
    failures = iter([True, True, False])

    def locked_twice(*args, **kwargs):
        if next(failures):
            raise OperationalError("database is locked")
        return original(*args, **kwargs)

    monkeypatch.setattr(delivery, "_outbound_keep", locked_twice)
    receive(wa.message_event(text="sent, then locked"))
    # Sent once: recording the wamid was waited for, not given up on and resent.
    assert sent_texts() == ["You said: sent, then locked"]
    assert the_message().state == UserMessage.State.DELIVERED
    assert OutboundMessage.objects.get().wamid
    assert no_backoff_sleep == [0.2, 0.4]


def test_an_answer_from_mka1_is_stored_through_a_locked_database_not_asked_again(
    receive, mka1_calls: Calls, monkeypatch, no_backoff_sleep: list[float]
) -> None:
    from django.db import OperationalError

    original = processing.turn_store  # type: ignore[attr-defined]
    failures = iter([True, False])

    def locked_once(**kwargs):
        if next(failures):
            raise OperationalError("database is locked")
        return original(**kwargs)

    monkeypatch.setattr(processing, "turn_store", locked_once)
    receive(wa.message_event(text="answered, then locked"))
    assert sent_texts() == ["You said: answered, then locked"]
    assert len(response_creates(mka1_calls)) == 1  # one MKA1 call, no orphan response
    assert AuditEvent.objects.filter(action="responses.create").count() == 1
    assert no_backoff_sleep == [0.2]


def test_a_lease_is_released_through_a_locked_database(
    receive, no_backoff_sleep: list[float]
) -> None:
    from django.db import OperationalError, connection

    lease_table = ProcessingLease._meta.db_table
    failures = iter([False, True])  # taken (quick steps renew nothing), then released

    def locked_once(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        if sql.startswith(f"UPDATE {lease_table}") and next(failures, False):
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(locked_once):
        receive(wa.message_event(text="released late"))
    assert sent_texts() == ["You said: released late"]
    # Left behind, the lease would keep the user's next message waiting until it expired.
    assert not ProcessingLease.objects.filter(expires_at__gt=timezone.now()).exists()
    assert no_backoff_sleep == [0.2]


# --- crashes -----------------------------------------------------------------------------


def test_worker_killed_after_storing_before_sending_resumes_without_mka1(
    receive, mka1_calls: Calls, monkeypatch
) -> None:
    receive(wa.message_event(text="crash after store"), run=False)
    message = the_message()

    def killed(_message):
        raise WorkerKilled

    with monkeypatch.context() as patch:
        patch.setattr(processing, "deliver", killed)
        patch.setattr(processing, "lease_release", lambda *args: None)  # SIGKILL: no cleanup
        with pytest.raises(WorkerKilled):
            process_end_user.call_local(message.end_user_id)
    message.refresh_from_db()
    assert message.state == UserMessage.State.ANSWERED
    assert sent_texts() == []
    recover_unfinished.call_local()  # the dead worker's lease is still live: hands off
    assert sent_texts() == []
    run_due_work()  # the lease expires; recovery takes over
    assert sent_texts() == ["You said: crash after store"]
    assert len(response_creates(mka1_calls)) == 1
    assert AuditEvent.objects.filter(action="responses.create").count() == 1


def test_worker_killed_during_the_mka1_call_still_gives_exactly_one_reply(
    receive, mka1_calls: Calls, monkeypatch
) -> None:
    receive(wa.message_event(text="crash mid-call"), run=False)
    message = the_message()

    def killed(**kwargs):
        raise WorkerKilled  # MKA1 answered, but we died before storing it

    with monkeypatch.context() as patch:
        patch.setattr(processing, "turn_store", killed)
        patch.setattr(processing, "lease_release", lambda *args: None)
        with pytest.raises(WorkerKilled):
            process_end_user.call_local(message.end_user_id)
    assert the_message().state == UserMessage.State.QUEUED
    run_due_work()
    assert sent_texts() == ["You said: crash mid-call"]
    assert Turn.objects.count() == 1
    assert AuditEvent.objects.filter(action="responses.create").count() == 1
    assert len(response_creates(mka1_calls)) == 2


def test_a_lost_task_is_picked_up_by_recovery(receive) -> None:
    receive(wa.message_event(text="lost"), run=False)  # the queue never ran it
    assert recover_unfinished.call_local() == 1
    assert sent_texts() == ["You said: lost"]
    assert recover_unfinished.call_local() == 0


def test_a_restarted_consumer_recovers_now_and_again_when_dead_leases_run_out(
    receive, settings
) -> None:
    from huey.contrib.djhuey import HUEY

    from multichannel.tasks import recover_after_start

    receive(wa.message_event(wa_id="15550000001", text="orphaned"), run=False)
    receive(wa.message_event(wa_id="15550000002", text="held by the dead"), run=False)
    held = UserMessage.objects.get(text="held by the dead")
    expires = timezone.now() + timedelta(seconds=settings.TURN_LEASE_SECONDS)
    ProcessingLease.objects.create(end_user_id=held.end_user_id, owner="dead", expires_at=expires)
    HUEY.flush()

    assert recover_after_start.call_local() == 1
    assert sent_texts() == ["You said: orphaned"]
    follow_up = [task for task in HUEY.scheduled() if task.name.endswith("recover_unfinished")]
    assert [task.eta for task in follow_up] == [expires.replace(tzinfo=None) + timedelta(seconds=1)]
    run_due_work()
    assert sent_texts() == ["You said: orphaned", "You said: held by the dead"]


@pytest.mark.django_db(transaction=True)
def test_a_queue_outage_at_commit_still_acknowledges_and_recovery_answers(
    post_webhook: PostWebhook, monkeypatch, caplog
) -> None:
    from multichannel import tasks

    def queue_down(*args: object) -> None:
        raise ConnectionError("queue unreachable")

    # Two senders in one delivery: the fan-out queues both (it answers a delivery's
    # sender itself only when there is one).
    events = [
        wa.message_event(wa_id="15550000001", text="queue was down"),
        wa.message_event(wa_id="15550000002", text="for both"),
    ]
    with monkeypatch.context() as patch:
        patch.setattr(tasks, "process_end_user", queue_down)
        response = post_webhook(wa.webhook_payload(events))
    # Stored before the 200: Meta must not redeliver, and nothing is lost.
    assert response.status_code == 200
    assert set(UserMessage.objects.values_list("state", flat=True)) == {UserMessage.State.QUEUED}
    assert "recovery will" in caplog.text
    assert recover_unfinished.call_local() == 2
    assert sorted(sent_texts()) == ["You said: for both", "You said: queue was down"]


# --- concurrency -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_same_webhook_delivered_concurrently_is_answered_once(mka1_calls: Calls) -> None:
    body = wa.encode(wa.webhook_payload([wa.message_event(text="concurrent")]))
    assert at_once(*[partial(webhook_deliver, body)] * 5) == [200] * 5
    assert InboundMessage.objects.count() == 1
    assert len(response_creates(mka1_calls)) == 1
    assert sent_texts() == ["You said: concurrent"]


@pytest.mark.django_db(transaction=True)
def test_two_workers_on_one_user_never_fork_the_chain(mka1_calls: Calls) -> None:
    base = int(timezone.now().timestamp())
    events = [wa.message_event(text=f"w{i}", timestamp=base + i) for i in range(4)]
    from whatsapp.services import delivery_fan_out, webhook_accept

    body = wa.encode(wa.webhook_payload(events))
    delivery_fan_out(webhook_accept(raw_body=body, payload={}).pk)
    end_user_id = UserMessage.objects.get(text="w0").end_user_id
    outcomes = at_once(*[partial(process_end_user.call_local, end_user_id)] * 3)
    assert [outcome for outcome in outcomes if isinstance(outcome, BaseException)] == []
    recover_unfinished.call_local()
    assert sent_texts() == [f"You said: w{i}" for i in range(4)]
    turns = list(Turn.objects.order_by("id"))
    assert len(turns) == 4
    for earlier, later in itertools.pairwise(turns):
        assert later.previous_response_id == earlier.response_id


def test_an_unexpected_error_is_retried_then_apologised_for(receive, monkeypatch, settings) -> None:
    settings.TURN_MAX_ATTEMPTS = 2

    original = processing.turn_store  # type: ignore[attr-defined]

    def broken(**kwargs):
        if kwargs["text"] == "poison":
            raise RuntimeError("a bug")
        return original(**kwargs)

    monkeypatch.setattr(processing, "turn_store", broken)
    base = int(timezone.now().timestamp())
    receive(wa.message_event(text="poison", timestamp=base))
    receive(wa.message_event(text="next", timestamp=base + 1))
    message = UserMessage.objects.get(text="poison")
    assert (message.state, message.attempts) == (UserMessage.State.QUEUED, 1)
    assert "a bug" in message.error
    assert sent_texts() == []  # the next message waits behind it
    run_due_work()
    # Given up on with an apology; the user's next message is answered after it.
    assert sent_texts() == [
        "Sorry, something went wrong answering that. Please try again in a moment.",
        "You said: next",
    ]


def test_a_worker_that_lost_its_lease_stops_after_the_current_step(
    receive, monkeypatch, settings
) -> None:
    base = int(timezone.now().timestamp())
    receive(
        wa.message_event(text="one", timestamp=base),
        wa.message_event(text="two", timestamp=base + 1),
        run=False,
    )
    end_user_id = UserMessage.objects.get(text="one").end_user_id
    original = processing._step
    clock = [0.0]

    def slow_step(message):
        done = original(message)
        # The step took longer than the lease; meanwhile it ran out and another worker
        # took it.
        clock[0] += settings.TURN_LEASE_SECONDS + 1
        ProcessingLease.objects.filter(end_user_id=end_user_id).update(
            owner="someone-else", expires_at=timezone.now() + timedelta(minutes=5)
        )
        return done

    monkeypatch.setattr(processing, "lease_clock", lambda: clock[0])
    monkeypatch.setattr(processing, "_step", slow_step)
    assert processing.user_messages_process(end_user_id=end_user_id).outcome == "busy"
    states = dict(UserMessage.objects.values_list("text", "state"))
    assert states == {"one": UserMessage.State.ANSWERED, "two": UserMessage.State.QUEUED}


@pytest.mark.parametrize(("answer_takes", "leases_taken"), [(0.0, 1), (0.1, 2)])
def test_a_lease_is_renewed_only_after_a_slow_step(
    receive, monkeypatch, settings, answer_takes: float, leases_taken: int
) -> None:
    # Renewing after every step cost two statements a message: the lease is renewed
    # before a step only once a tenth of it is used (then nine tenths are ahead).
    from django.db import connection

    lease_table = ProcessingLease._meta.db_table
    clock = [0.0]
    original = processing._step

    def step(message):
        done = original(message)
        if message.state == UserMessage.State.ANSWERED:
            clock[0] += settings.TURN_LEASE_SECONDS * answer_takes
        return done

    monkeypatch.setattr(processing, "lease_clock", lambda: clock[0])
    monkeypatch.setattr(processing, "_step", step)
    takes: list[str] = []

    def count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        if sql.startswith(f"UPDATE {lease_table}") and "<=" in sql:
            takes.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        receive(wa.message_event(text="quick or slow"))
    assert len(takes) == leases_taken
    assert UserMessage.objects.get().state == UserMessage.State.DELIVERED


# --- hardening: secrets, waits, limits, the LOGIN reply, the ledger ---------------------------


def test_a_graph_error_echoing_the_access_token_is_stored_without_it(receive, settings) -> None:
    settings.WHATSAPP_TOKEN = "EAAGtestTokenNotReal0123456789abcdef"
    echo = {
        "error": {
            "message": f"Malformed access token {settings.WHATSAPP_TOKEN}",
            "type": "OAuthException",
            "code": 190,
        }
    }
    fault_inject("graph.messages", status=401, body=echo, times=3)  # typing, mark-read, send
    receive(wa.message_event(text="hello"))
    message = the_message()
    assert message.state == UserMessage.State.FAILED
    stored = str(OutboundMessage.objects.get().errors) + message.error
    assert settings.WHATSAPP_TOKEN not in stored
    assert "EAAG" not in stored
    assert "[redacted]" in stored


def test_an_unexpected_error_around_an_http_call_is_kept_by_type_and_redacted_text(
    receive, settings, monkeypatch
) -> None:
    settings.WHATSAPP_TOKEN = "test-graph-token-that-leaks"

    def broken_send(self, **kwargs):
        raise RuntimeError(f"Invalid header value b'Bearer {settings.WHATSAPP_TOKEN}\\n'")

    monkeypatch.setattr("whatsapp.graph.GraphClient.send_text", broken_send)
    receive(wa.message_event(text="hello"))
    message = the_message()
    assert message.state == UserMessage.State.ANSWERED  # retried later, not lost
    assert message.error.startswith("RuntimeError: Invalid header value")
    assert settings.WHATSAPP_TOKEN not in message.error
    assert "[redacted]" in message.error


def test_a_huge_retry_after_never_parks_a_user_past_the_cap(receive, settings) -> None:
    settings.RETRY_DELAY_MAX_SECONDS = 600
    fault_inject("responses.create", status=429, headers={"Retry-After": "99999999999"}, times=1)
    receive(wa.message_event(text="later"))
    message = the_message()
    assert message.state == UserMessage.State.QUEUED
    assert message.next_attempt_at is not None
    wait = (message.next_attempt_at - timezone.now()).total_seconds()
    assert 0 < wait <= 600


def test_a_burst_of_texts_makes_only_the_senders_allowance_of_mka1_calls(
    receive, settings, mka1_calls: Calls
) -> None:
    settings.SENDER_BURST = 10
    settings.SENDER_REFILL_SECONDS = 600  # no refill during the test
    base = int(timezone.now().timestamp()) - 60
    events = [wa.message_event(text=f"spam {n}", timestamp=base + n) for n in range(30)]
    receive(*events)
    messages = list(UserMessage.objects.order_by("sent_at", "id"))
    assert [m.state for m in messages] == [UserMessage.State.DELIVERED] * 30
    assert len(response_creates(mka1_calls)) == 10
    assert [m.limited for m in messages] == [False] * 10 + [True] * 20
    notices = [text for text in sent_texts() if text == settings.SENDER_LIMIT_REPLY]
    assert len(notices) == 1  # one polite notice, then silence
    assert len(sent_texts()) == 11
    assert AuditEvent.objects.filter(action="responses.create").count() == 10


def test_the_senders_allowance_refills_over_time(receive, settings, mka1_calls: Calls) -> None:
    settings.SENDER_BURST = 1
    settings.SENDER_REFILL_SECONDS = 600
    base = int(timezone.now().timestamp()) - 60
    receive(wa.message_event(text="one", timestamp=base))
    receive(wa.message_event(text="two", timestamp=base + 1))
    assert len(response_creates(mka1_calls)) == 1
    cache_key = f"limits:sender:{the_first_user_id()}"
    from django.core.cache import cache

    tokens, since = cache.get(cache_key)
    cache.set(cache_key, (tokens, since - 600))  # ten minutes pass
    receive(wa.message_event(text="three", timestamp=base + 2))
    assert len(response_creates(mka1_calls)) == 2


def the_first_user_id() -> str:
    return UserMessage.objects.order_by("id").first().end_user_id


def test_login_delivered_but_not_saved_as_delivered_issues_no_second_link(receive) -> None:
    from django.db import connection

    from web.models import SignInLink

    failures = {"left": 8}  # longer than stored_despite_outage waits
    messages = UserMessage._meta.db_table

    def locked(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        delivered = sql.startswith(f'UPDATE "{messages}"') and (
            UserMessage.State.DELIVERED in (params or ())
        )
        if delivered and failures["left"]:
            failures["left"] -= 1
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(locked):
        receive(wa.message_event(text="LOGIN"))
    assert failures["left"] == 0
    assert the_message().state == UserMessage.State.ANSWERED  # the reply went out...
    assert len(sent_texts()) == 1
    run_due_work()  # ...and the retry finds every part sent
    assert the_message().state == UserMessage.State.DELIVERED
    assert len(sent_texts()) == 1
    assert SignInLink.objects.count() == 1
    assert SignInLink.objects.get().expires_at > timezone.now()  # the link the user holds


def test_no_mka1_call_while_the_ledger_cannot_record(receive) -> None:
    from django.db import connection

    from audit.triggers import triggers_install, triggers_uninstall
    from multichannel.sandbox.models import SandboxConversation, SandboxResponse

    receive(wa.message_event(text="first"))  # the ledger has events now
    triggers_uninstall(connection)
    try:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM audit_auditchainhead")
    finally:
        triggers_install(connection)
    receive(wa.message_event(wa_id="15550000002", text="second, from someone new"))
    run_due_work()
    # MKA1 (the sandbox) saw no new conversation and no new response: nothing unaudited.
    assert SandboxConversation.objects.count() == 1
    assert SandboxResponse.objects.count() == 1
    message = UserMessage.objects.get(text="second, from someone new")
    assert message.state == UserMessage.State.QUEUED
    assert "LedgerUnavailableError" in message.error


def test_a_conversation_mka1_created_is_stored_through_a_locked_database_not_created_again(
    receive, mka1_calls: Calls, monkeypatch, no_backoff_sleep: list[float]
) -> None:
    from django.db import OperationalError

    from audit import services as audit_services
    from multichannel import services

    original = audit_services.audit_event_record
    failures = iter([True, False])

    def locked_once(**kwargs):
        if kwargs.get("action") == "conversations.create" and next(failures):
            raise OperationalError("database is locked")
        return original(**kwargs)

    monkeypatch.setattr(services, "audit_event_record", locked_once)
    receive(wa.message_event(text="a first message, then locked"))
    assert sent_texts() == ["You said: a first message, then locked"]
    creates = [call for call in mka1_calls if call[:2] == ("POST", "/conversations")]
    assert len(creates) == 1  # no second conversation, orphaned at MKA1
    assert Conversation.objects.count() == 1
    assert AuditEvent.objects.filter(action="conversations.create").count() == 1
    assert no_backoff_sleep == [0.2]
