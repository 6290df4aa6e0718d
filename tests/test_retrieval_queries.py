"""How many SQL statements a retrieval (`GET /api/multichannel/<id>`) costs, exactly:
what it adds to MKA1's own `responses.get`. A statement that creeps in (the end user
read twice, a per-item query) fails this test. The in-process MKA1 stand-in's own
queries (its `sandbox_*` tables) are MKA1's time, not ours, and are left out."""

from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from tests.support.audit_ledger import audit_event_statements

pytestmark = pytest.mark.django_db

# The session comes from the session cache (0); the signed-in end user (1), the turn
# with its conversation (1), the ledger's readiness before MKA1 is called (1); then the
# audit event (tests/support/audit_ledger.py).
BEFORE_MKA1 = 3


def ours(captured: CaptureQueriesContext) -> list[str]:
    return [query["sql"] for query in captured.captured_queries if "sandbox_" not in query["sql"]]


@pytest.mark.parametrize("repeat", [1, 3], ids=["first", "third"])
def test_a_retrieval_costs_a_fixed_number_of_statements(
    whatsapp_says: Any, web_client: Any, repeat: int
) -> None:
    cache.clear()
    message = whatsapp_says("hello")
    message.refresh_from_db()
    browser = web_client(message.end_user)
    url = f"/api/multichannel/{message.turn.response_id}"
    for _ in range(repeat - 1):
        assert browser.get(url).status_code == 200
    with CaptureQueriesContext(connection) as captured:
        assert browser.get(url).status_code == 200
    statements = ours(captured)
    assert len(statements) == BEFORE_MKA1 + audit_event_statements(), "\n".join(statements)
    assert AuditEvent.objects.filter(action="responses.get").count() == repeat
