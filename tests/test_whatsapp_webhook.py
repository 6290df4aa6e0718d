"""The webhook: Meta's handshake, signature checks, durable storage, statuses."""

import time

import pytest
from django.conf import settings
from django.test import Client, override_settings

from multichannel.models import EndUser, UserMessage
from multichannel.sandbox import whatsapp as wa
from tests.support.outgoing import Calls, response_creates, sent_texts
from tests.support.webhooks import PostWebhook
from whatsapp.models import InboundMessage, OutboundMessage, WebhookDelivery, WhatsAppIdentity
from whatsapp.services import UNSUPPORTED, identity_resolve

pytestmark = pytest.mark.django_db


def nothing_stored() -> bool:
    return not (WebhookDelivery.objects.exists() or InboundMessage.objects.exists())


# --- handshake ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/whatsapp/webhook", "/whatsapp/webhook/"])
def test_verification_handshake_echoes_the_challenge(client: Client, path: str) -> None:
    answer = client.get(
        path,
        {"hub.mode": "subscribe", "hub.verify_token": "sandbox-not-secret", "hub.challenge": "42"},
    )
    assert answer.status_code == 200
    assert answer.content == b"42"
    assert answer["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "42"},
        {"hub.mode": "unsubscribe", "hub.verify_token": "sandbox-not-secret", "hub.challenge": "1"},
        {"hub.challenge": "42"},
    ],
)
def test_verification_handshake_refuses_anything_else(client: Client, params: dict) -> None:
    answer = client.get("/whatsapp/webhook", params)
    assert answer.status_code == 403
    assert b"42" not in answer.content


def test_other_methods_are_not_allowed(client: Client) -> None:
    assert client.put("/whatsapp/webhook").status_code == 405


# --- signature ------------------------------------------------------------------------


def test_missing_signature_is_401_and_stores_nothing(post_webhook: PostWebhook) -> None:
    answer = post_webhook(wa.webhook_payload([wa.message_event()]), signature="")
    assert answer.status_code == 401
    assert nothing_stored()


def test_wrong_signature_is_403_and_stores_nothing(post_webhook: PostWebhook) -> None:
    answer = post_webhook(wa.webhook_payload([wa.message_event()]), signature="sha256=" + "0" * 64)
    assert answer.status_code == 403
    assert nothing_stored()


def test_signature_of_a_different_body_is_403(post_webhook: PostWebhook) -> None:
    signed = wa.encode(wa.webhook_payload([wa.message_event(text="harmless")]))
    sent = wa.encode(wa.webhook_payload([wa.message_event(text="tampered")]))
    answer = post_webhook(raw=sent, signature=wa.sign(signed, "sandbox-not-secret"))
    assert answer.status_code == 403
    assert nothing_stored()


def test_signature_with_another_secret_is_403(post_webhook: PostWebhook) -> None:
    body = wa.encode(wa.webhook_payload([wa.message_event()]))
    answer = post_webhook(raw=body, signature=wa.sign(body, "someone-elses-secret"))
    assert answer.status_code == 403
    assert nothing_stored()


# --- bad bodies -------------------------------------------------------------------------


def test_malformed_json_is_400_and_stores_nothing(post_webhook: PostWebhook) -> None:
    answer = post_webhook(raw=b'{"object": "whatsapp_business_account", "entry": [')
    assert answer.status_code == 400
    assert nothing_stored()


def test_json_that_is_not_an_object_is_400(post_webhook: PostWebhook) -> None:
    assert post_webhook(raw=b"[1, 2, 3]").status_code == 400
    assert nothing_stored()


def test_json_nested_thousands_deep_is_400_not_a_crash(post_webhook: PostWebhook) -> None:
    # json.loads gives up with RecursionError, not ValueError, on such a body.
    assert post_webhook(raw=b"[" * 50_000 + b"]" * 50_000).status_code == 400
    assert nothing_stored()


@override_settings(WHATSAPP_MAX_BODY_BYTES=2048)
def test_body_above_the_cap_is_413(post_webhook: PostWebhook) -> None:
    answer = post_webhook(wa.webhook_payload([wa.message_event(text="x" * 4000)]))
    assert answer.status_code == 413
    assert nothing_stored()


def test_empty_entry_is_acknowledged_and_kept(post_webhook: PostWebhook) -> None:
    answer = post_webhook({"object": "whatsapp_business_account", "entry": []})
    assert answer.status_code == 200
    assert WebhookDelivery.objects.count() == 1
    assert not InboundMessage.objects.exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"object": "instagram", "entry": [{"changes": [{"field": "messages", "value": {}}]}]},
        {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "flows"}]}]},
        {"object": "whatsapp_business_account", "entry": "not-a-list"},
        {"object": "whatsapp_business_account", "entry": [{"changes": [{"value": None}]}]},
        {"entry": [{"changes": [{"field": "messages", "value": {"messages": [{"id": 1}]}}]}]},
    ],
)
def test_unknown_shapes_are_stored_and_acknowledged(
    post_webhook: PostWebhook, payload: dict
) -> None:
    answer = post_webhook(payload)
    assert answer.status_code == 200
    assert WebhookDelivery.objects.count() == 1
    assert not UserMessage.objects.exists()


# --- storing messages -------------------------------------------------------------------


def test_a_text_message_is_stored_with_its_raw_payload(
    post_webhook: PostWebhook, django_capture_on_commit_callbacks
) -> None:
    event = wa.message_event(wa_id="15550001111", text="Hi there")
    payload = wa.webhook_payload([event])
    with django_capture_on_commit_callbacks(execute=False):
        answer = post_webhook(payload)
    assert answer.status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.wamid == event["message"]["id"]
    assert inbound.raw == event["message"]
    assert inbound.phone_number_id == "100000000000001"
    assert WebhookDelivery.objects.get().raw_body == wa.encode(payload).decode()
    message = inbound.user_message
    assert (message.channel, message.kind, message.text) == ("whatsapp", "text", "Hi there")
    assert message.state == UserMessage.State.QUEUED
    assert message.end_user.whatsapp_identity.wa_id == "15550001111"


def test_the_answer_is_queued_only_after_commit(
    post_webhook: PostWebhook, django_capture_on_commit_callbacks, mka1_calls: Calls
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        post_webhook(wa.webhook_payload([wa.message_event()]))
    assert len(callbacks) == 1
    assert mka1_calls == []  # nothing was asked inside the request


def test_a_batch_from_several_users_stores_and_answers_every_message(
    post_webhook: PostWebhook, django_capture_on_commit_callbacks, mka1_calls: Calls
) -> None:
    now = int(time.time())
    events = [
        wa.message_event(wa_id="15550000001", text="one", timestamp=now - 3),
        wa.message_event(wa_id="15550000002", text="two", timestamp=now - 2),
        wa.message_event(wa_id="15550000001", text="three", timestamp=now - 1),
    ]
    payload = wa.webhook_payload(events[:2])
    # A second entry in the same delivery: every entry and change counts, not just the first.
    payload["entry"].append(wa.webhook_payload(events[2:])["entry"][0])
    with django_capture_on_commit_callbacks(execute=True):
        assert post_webhook(payload).status_code == 200
    assert InboundMessage.objects.count() == 3
    assert EndUser.objects.count() == 2
    assert sent_texts("15550000001") == ["You said: one", "You said: three"]
    assert sent_texts("15550000002") == ["You said: two"]
    assert len(response_creates(mka1_calls)) == 3


def test_a_redelivered_webhook_is_answered_once(
    post_webhook: PostWebhook, django_capture_on_commit_callbacks, mka1_calls: Calls
) -> None:
    payload = wa.webhook_payload([wa.message_event(text="only once")])
    for _ in range(5):
        with django_capture_on_commit_callbacks(execute=True):
            assert post_webhook(payload).status_code == 200
    assert WebhookDelivery.objects.count() == 5
    assert InboundMessage.objects.count() == 1
    assert len(response_creates(mka1_calls)) == 1
    assert sent_texts() == ["You said: only once"]


def test_a_sender_known_only_by_business_scoped_id_is_answered_by_that_id(
    post_webhook: PostWebhook, django_capture_on_commit_callbacks
) -> None:
    event = wa.message_event(wa_id=None, bsuid="US.13491208655302741918", text="no phone")
    with django_capture_on_commit_callbacks(execute=True):
        assert post_webhook(wa.webhook_payload([event])).status_code == 200
    identity = WhatsAppIdentity.objects.get()
    assert (identity.wa_id, identity.bsuid) == (None, "US.13491208655302741918")
    from multichannel.sandbox.models import SandboxGraphMessage

    sent = SandboxGraphMessage.objects.get(kind="text")
    assert sent.body["recipient"] == "US.13491208655302741918"
    assert "to" not in sent.body


def test_the_bsuid_in_contacts_maps_a_phone_less_message(post_webhook: PostWebhook) -> None:
    event = wa.message_event(wa_id=None, bsuid="BR.1502576394655843")
    del event["message"]["from_user_id"]  # only the contact carries it
    assert post_webhook(wa.webhook_payload([event])).status_code == 200
    assert InboundMessage.objects.get().identity.bsuid == "BR.1502576394655843"


def test_a_contact_for_someone_else_never_binds_their_id_to_the_sender(
    post_webhook: PostWebhook, django_capture_on_commit_callbacks
) -> None:
    # A sends a message; the contacts entry beside it names B (B's number and BSUID).
    event = wa.message_event(wa_id="15550000001", text="from A")
    event["contact"] = {"profile": {"name": "B"}, "wa_id": "15550000002", "user_id": "US.B"}
    assert post_webhook(wa.webhook_payload([event])).status_code == 200
    sender = InboundMessage.objects.get().identity
    assert (sender.wa_id, sender.bsuid) == ("15550000001", None)
    # B's later BSUID-only message is B's own, and B's reply goes to B, not to A.
    later = wa.message_event(wa_id=None, bsuid="US.B", text="from B")
    with django_capture_on_commit_callbacks(execute=True):
        assert post_webhook(wa.webhook_payload([later])).status_code == 200
    assert InboundMessage.objects.get(raw__id=later["message"]["id"]).identity != sender
    assert sent_texts("US.B") == ["You said: from B"]
    assert sent_texts("15550000001") == []


def test_a_matching_contact_still_completes_the_senders_ids(post_webhook: PostWebhook) -> None:
    event = wa.message_event(wa_id="15550000001", bsuid="US.A", text="hi")
    del event["message"]["from_user_id"]  # the contact (A's own) carries the BSUID
    assert post_webhook(wa.webhook_payload([event])).status_code == 200
    assert InboundMessage.objects.get().identity.bsuid == "US.A"


def test_ids_of_two_known_senders_in_one_message_keep_the_message(
    post_webhook: PostWebhook, django_capture_on_commit_callbacks
) -> None:
    by_phone = identity_resolve(wa_id="15550000001", bsuid=None)
    by_bsuid = identity_resolve(wa_id=None, bsuid="US.1")
    event = wa.message_event(wa_id="15550000001", bsuid="US.1", text="both ids")
    with django_capture_on_commit_callbacks(execute=True):
        assert post_webhook(wa.webhook_payload([event])).status_code == 200
    # Stored and answered (it was dropped as a "redelivery"), and nobody merged.
    assert InboundMessage.objects.get().identity == by_phone
    assert sent_texts("15550000001") == ["You said: both ids"]
    by_phone.refresh_from_db()
    by_bsuid.refresh_from_db()
    assert (by_phone.bsuid, by_bsuid.wa_id) == (None, None)


@pytest.mark.parametrize("kind", ["location", "sticker", "video", "contacts", "unknown"])
def test_messages_we_cannot_read_get_the_polite_reply_without_mka1(
    post_webhook: PostWebhook,
    django_capture_on_commit_callbacks,
    mka1_calls: Calls,
    kind: str,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        post_webhook(wa.webhook_payload([wa.message_event(message_type=kind)]))
    inbound = InboundMessage.objects.get()
    assert inbound.type == kind
    assert inbound.user_message.kind == UNSUPPORTED
    assert mka1_calls == []
    assert sent_texts() == [settings.WHATSAPP_UNSUPPORTED_REPLY]
    assert "voice note, a photo or a document" in settings.WHATSAPP_UNSUPPORTED_REPLY


# --- statuses --------------------------------------------------------------------------


def _answered_message(post_webhook: PostWebhook, capture) -> OutboundMessage:
    with capture(execute=True):
        post_webhook(wa.webhook_payload([wa.message_event()]))
    return OutboundMessage.objects.get()


def test_statuses_move_the_outbound_message_forward_once(
    post_webhook: PostWebhook, django_capture_on_commit_callbacks, mka1_calls: Calls
) -> None:
    outbound = _answered_message(post_webhook, django_capture_on_commit_callbacks)
    assert outbound.status == OutboundMessage.Status.ACCEPTED
    calls_before = len(mka1_calls)
    for status in ("sent", "delivered", "delivered", "read", "sent"):
        payload = wa.webhook_payload(statuses=[wa.status_event(str(outbound.wamid), status)])
        with django_capture_on_commit_callbacks(execute=True):
            assert post_webhook(payload).status_code == 200
    outbound.refresh_from_db()
    assert outbound.status == OutboundMessage.Status.READ  # "sent" after "read" is ignored
    assert len(mka1_calls) == calls_before  # a status never triggers a reply
    assert len(sent_texts()) == 1


def test_a_failed_status_keeps_its_errors(
    post_webhook: PostWebhook, django_capture_on_commit_callbacks
) -> None:
    outbound = _answered_message(post_webhook, django_capture_on_commit_callbacks)
    errors = [{"code": 131047, "title": "Re-engagement message"}]
    payload = wa.webhook_payload(
        statuses=[wa.status_event(str(outbound.wamid), "failed", errors=errors)]
    )
    post_webhook(payload)
    post_webhook(payload)
    outbound.refresh_from_db()
    assert outbound.status == OutboundMessage.Status.FAILED
    assert outbound.errors == errors


def test_a_status_for_an_unknown_message_is_acknowledged(post_webhook: PostWebhook) -> None:
    payload = wa.webhook_payload(statuses=[wa.status_event("wamid.UNKNOWN", "delivered")])
    assert post_webhook(payload).status_code == 200
    assert WebhookDelivery.objects.count() == 1
    assert not OutboundMessage.objects.exists()
