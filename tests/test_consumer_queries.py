"""How many SQL statements the queue consumer spends on one WhatsApp text, exactly,
from taking the user's lease to releasing it: answered through MKA1, audited, sent.
A statement that creeps in (a row read twice, a lock or savepoint where none is
needed) fails this test. The in-process MKA1 and Graph stand-ins' own statements are
the outside services' time, not ours, and are left out.

Counted inside the test's transaction, where the consumer's transactions show as
SAVEPOINT/RELEASE pairs (in production BEGIN/COMMIT, which Django does not log)."""

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from multichannel.models import UserMessage
from multichannel.sandbox import whatsapp as wa
from tests.support.audit_ledger import audit_event_statements
from tests.support.webhooks import PostWebhook

pytestmark = pytest.mark.django_db

# Answering: the lease taken (1); the next message (1); its WhatsApp message and sender,
# read once for the opt-out check and the typing indicator (1), marked read (1); the
# conversation (1); the ledger ready before MKA1 is called (1). Then, in one
# transaction (2) and turn_store's own (a savepoint, 2): the chain's next link on the
# conversation, which locks it (1), the turn (1), the audit event
# (tests/support/audit_ledger.py) and the message answered (1). The lease is not
# renewed after quick steps (tests/test_whatsapp_processing.py).
ANSWER_BESIDES_THE_AUDIT_EVENT = 6 + 2 + 2 + 2 + 1
# Delivering: the message (1) and its WhatsApp message (1); the parts sent already (1);
# the 24-hour window (1); whether the user wrote since (1, to quote or not); the part
# kept (one INSERT ... ON CONFLICT, 1); the message delivered (1).
DELIVER = 5 + 1 + 1
# Done: nothing left (1), the lease ended (1), nothing arrived meanwhile (1).
FINISH = 3


def _outside(stack: list[inspect.FrameInfo]) -> bool:
    return any("multichannel/sandbox/" in frame.filename for frame in stack)


@pytest.fixture
def consumer_statements(
    post_webhook: PostWebhook, django_capture_on_commit_callbacks: Any
) -> Callable[[str], list[str]]:
    def run(text: str) -> list[str]:
        with django_capture_on_commit_callbacks(execute=False) as queued:
            assert post_webhook(wa.webhook_payload([wa.message_event(text=text)])).status_code
        statements: list[str] = []

        def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            if not _outside(inspect.stack(0)):
                statements.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            for task in queued:
                task()
        return statements

    return run


def test_a_text_from_a_known_user_costs_a_fixed_number_of_statements(
    consumer_statements: Callable[[str], list[str]],
) -> None:
    consumer_statements("hello")  # the first creates the conversation
    statements = consumer_statements("hello again")
    per_text = ANSWER_BESIDES_THE_AUDIT_EVENT + audit_event_statements() + DELIVER + FINISH
    assert len(statements) == per_text, "\n".join(sql[:120] for sql in statements)
    assert UserMessage.objects.filter(state=UserMessage.State.DELIVERED).count() == 2
