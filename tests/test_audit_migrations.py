"""Migrations of the ledger keep every event verifiable: bodies moved out of the
append-only table by 0004 export and verify exactly as before."""

from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from audit.integrity import GENESIS_HASH, chain_hash, content_digest

BEFORE = [("audit", "0003_auditors_group")]
AFTER = [("audit", "0004_bodies_and_head_guard")]


def migrate(targets: list[tuple[str, str]] | None = None) -> None:
    """To the given migrations, or back to the latest of every app."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets or executor.loader.graph.leaf_nodes())


@pytest.fixture(autouse=True)
def _latest_schema_afterwards() -> Iterator[None]:
    yield
    migrate()


@pytest.mark.django_db(transaction=True)
def test_bodies_move_out_of_the_event_table_and_everything_still_verifies() -> None:
    migrate(BEFORE)
    texts = ['{"id":"resp_1","n":1}', '{"id":"resp_1","n":1}', "null", '{"z":1E400}']
    previous = GENESIS_HASH
    with connection.cursor() as cursor:
        for sequence, text in enumerate(texts, start=1):
            stamp = f"2026-03-30T19:10:1{sequence}.000Z"
            fields: dict[str, Any] = {
                "channel": "webapp",
                "action": "responses.get",
                "end_user_id": "user_1",
                "response_id": "resp_1",
                "conversation_id": None,
                "previous_response_id": None,
                "api_key_fingerprint": "sha256:0123456789abcdef",
                "context": {},
            }
            digest = content_digest(timestamp=stamp, full_response=text, **fields)
            link = chain_hash(sequence=sequence, previous_hash=previous, digest=digest)
            cursor.execute(
                "INSERT INTO audit_auditevent (sequence, timestamp, channel, action, "
                "end_user_id, response_id, conversation_id, previous_response_id, "
                "full_response, api_key_fingerprint, context, content_digest, "
                "previous_hash, hash) VALUES (%s, %s, 'webapp', 'responses.get', 'user_1', "
                "'resp_1', NULL, NULL, %s, 'sha256:0123456789abcdef', '{}', %s, %s, %s)",
                [sequence, f"2026-03-30 19:10:1{sequence}", text, digest, previous, link],
            )
            previous = link
        cursor.execute(
            "INSERT INTO audit_auditchainhead (id, sequence, hash) VALUES (1, %s, %s)",
            [len(texts), previous],
        )
    # What the export wrote before this migration: the stored text spliced in as-is.
    expected = "".join(
        f'{{"timestamp":"2026-03-30T19:10:1{n}.000Z","channel":"webapp",'
        '"action":"responses.get","end_user_id":"user_1","response_id":"resp_1",'
        f'"conversation_id":null,"previous_response_id":null,"full_response":{text}}}\n'
        for n, text in enumerate(texts, start=1)
    )

    migrate(AFTER)

    from audit.models import AuditBody

    assert AuditBody.objects.count() == 2  # two distinct texts; "null" needs no body
    out_after, verdict = StringIO(), StringIO()
    call_command("export_audit", stdout=out_after)
    assert out_after.getvalue() == expected
    call_command("verify_audit", stdout=verdict)
    assert verdict.getvalue().startswith("OK: 4 events")
