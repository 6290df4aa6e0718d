"""The audit store is append-only through the ORM, and `audit_event_record` stores what
it is given, exactly."""

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from django.db import connection

from audit.models import AppendOnlyError, AuditEvent
from audit.services import audit_event_record
from multichannel.mka1 import Mka1Object, api_key_fingerprint

pytestmark = pytest.mark.django_db

MOMENT = datetime(2026, 3, 30, 19, 10, 14, tzinfo=UTC)

# A response as it might come off the wire: keys in no sorted order (and not in the
# order our own code would write them), indentation with tabs and CRLF, whitespace and
# escapes inside strings, literal non-ASCII, an escaped non-ASCII character, and
# numbers whose text a parse/dump round trip would change.
WIRE_TEXT = (
    '{\r\n\t"status" : "completed",\r\n'
    '\t"id":"resp_abc123",\r\n'
    '\t"zeta": {"b": 2, "a": [1, 2 ,3 ], "c": {}},\r\n'
    '\t"output_text": "¡Hola!  Mañana,\\tsí: \\"21 °C\\" 🌤 \\\\ ",\r\n'
    '\t"escaped": "caf\\u00e9",\r\n'
    '\t"numbers": {"exp": 1e5, "trailing": 1.50, "huge": 1E400, "neg": -0.0},\r\n'
    '\t"alpha": null,\r\n'
    '\t"empty": [ ]\r\n'
    "}\r\n"
)
# Written by hand: only the whitespace between tokens is gone.
STORED_TEXT = (
    '{"status":"completed","id":"resp_abc123","zeta":{"b":2,"a":[1,2,3],"c":{}},'
    '"output_text":"¡Hola!  Mañana,\\tsí: \\"21 °C\\" 🌤 \\\\ ",'
    '"escaped":"caf\\u00e9",'
    '"numbers":{"exp":1e5,"trailing":1.50,"huge":1E400,"neg":-0.0},'
    '"alpha":null,"empty":[]}'
)


def record(**overrides: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "channel": "whatsapp",
        "action": "responses.create",
        "end_user_id": "123",
        "response_id": "resp_abc123",
        "conversation_id": "conv_abc123",
        "previous_response_id": "resp_prev1",
        "full_response": {"id": "resp_abc123"},
        "api_key_fingerprint": api_key_fingerprint("test-mka1-key-not-real"),
        "context": {"wamid": "wamid.HBgM"},
        "timestamp": MOMENT,
    }
    fields.update(overrides)
    return audit_event_record(**fields)


def rows() -> list[dict[str, Any]]:
    return [dict(row) for row in AuditEvent.objects.order_by("id").values()]


@pytest.fixture
def event() -> AuditEvent:
    return record()


# --- append-only ------------------------------------------------------------------


def test_saving_a_changed_event_is_refused(event: AuditEvent) -> None:
    before = rows()
    stored = AuditEvent.objects.get(pk=event.pk)
    stored.end_user_id = "someone-else"
    with pytest.raises(AppendOnlyError):
        stored.save()
    with pytest.raises(AppendOnlyError):
        stored.save(update_fields=["end_user_id"])
    assert rows() == before


def test_the_instance_returned_by_record_cannot_be_saved_again(event: AuditEvent) -> None:
    before = rows()
    event.response_id = "resp_forged"
    with pytest.raises(AppendOnlyError):
        event.save()
    assert rows() == before


def test_saving_a_copy_as_a_new_row_is_refused(event: AuditEvent) -> None:
    before = rows()
    copy = AuditEvent.objects.get(pk=event.pk)
    copy.pk = None
    copy._state.adding = True
    with pytest.raises(AppendOnlyError):
        copy.save()
    assert rows() == before


def test_deleting_an_event_is_refused(event: AuditEvent) -> None:
    before = rows()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.get(pk=event.pk).delete()
    assert rows() == before


def test_queryset_update_is_refused(event: AuditEvent) -> None:
    before = rows()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(channel="webapp")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.update(channel="webapp")
    assert rows() == before


def test_queryset_delete_is_refused(event: AuditEvent) -> None:
    before = rows()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    assert rows() == before


def test_bulk_update_is_refused(event: AuditEvent) -> None:
    before = rows()
    stored = AuditEvent.objects.get(pk=event.pk)
    stored.channel = "webapp"
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.bulk_update([stored], ["channel"])
    assert rows() == before


def test_bulk_create_is_refused(event: AuditEvent) -> None:
    before = rows()
    extra = AuditEvent(timestamp=MOMENT, channel="webapp", action="responses.get", end_user_id="9")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.bulk_create([extra])
    assert rows() == before


def test_creating_through_the_manager_is_refused(event: AuditEvent) -> None:
    before = rows()
    fields = {"timestamp": MOMENT, "channel": "webapp", "action": "responses.get"}
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.create(end_user_id="9", **fields)
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.get_or_create(end_user_id="9", defaults=fields)
    with pytest.raises(AppendOnlyError):
        AuditEvent(end_user_id="9", **fields).save()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.update_or_create(pk=event.pk, defaults={"channel": "webapp"})
    assert rows() == before


# --- audit_event_record -----------------------------------------------------------


def test_record_stores_every_field() -> None:
    fingerprint = api_key_fingerprint("test-mka1-key-not-real")
    returned = record(
        channel="webapp",
        action="responses.get",
        end_user_id="123",
        response_id="resp_abc123",
        conversation_id="conv_abc123",
        previous_response_id="resp_prev1",
        full_response={"id": "resp_abc123", "output_text": "ok"},
        api_key_fingerprint=fingerprint,
        context={"wamid": "wamid.HBgM", "attempt": 2, "nested": {"ok": True}},
        timestamp=MOMENT,
    )

    stored = AuditEvent.objects.get(pk=returned.pk)
    assert stored.timestamp == MOMENT
    assert stored.channel == "webapp"
    assert stored.action == "responses.get"
    assert stored.end_user_id == "123"
    assert stored.response_id == "resp_abc123"
    assert stored.conversation_id == "conv_abc123"
    assert stored.previous_response_id == "resp_prev1"
    assert stored.full_response == '{"id":"resp_abc123","output_text":"ok"}'
    assert stored.api_key_fingerprint == fingerprint
    assert stored.context == {"wamid": "wamid.HBgM", "attempt": 2, "nested": {"ok": True}}


def test_record_stores_a_fingerprint_and_never_the_key() -> None:
    stored = AuditEvent.objects.get(pk=record().pk)
    assert stored.api_key_fingerprint == api_key_fingerprint("test-mka1-key-not-real")
    assert stored.api_key_fingerprint
    assert "test-mka1-key-not-real" not in str(list(AuditEvent.objects.values_list()))


def test_record_leaves_optional_fields_empty() -> None:
    stored = AuditEvent.objects.get(
        pk=audit_event_record(channel="whatsapp", action="responses.create", end_user_id="7").pk
    )
    assert stored.response_id is None
    assert stored.conversation_id is None
    assert stored.previous_response_id is None
    assert stored.full_response == "null"
    assert stored.api_key_fingerprint == ""
    assert stored.context == {}


def test_record_without_an_end_user_is_refused() -> None:
    with pytest.raises(ValueError, match="end user"):
        record(end_user_id="")
    assert not AuditEvent.objects.exists()


def test_record_truncates_the_timestamp_to_milliseconds() -> None:
    returned = record(timestamp=datetime(2026, 3, 30, 19, 10, 14, 123987, tzinfo=UTC))
    stored = AuditEvent.objects.get(pk=returned.pk)
    assert stored.timestamp == datetime(2026, 3, 30, 19, 10, 14, 123000, tzinfo=UTC)
    assert returned.timestamp == stored.timestamp


def test_record_stores_the_timestamp_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    returned = record(timestamp=datetime(2026, 3, 30, 21, 10, 14, 999999, tzinfo=plus_two))
    stored = AuditEvent.objects.get(pk=returned.pk)
    assert stored.timestamp == datetime(2026, 3, 30, 19, 10, 14, 999000, tzinfo=UTC)
    assert stored.timestamp.utcoffset() == timedelta(0)


def test_record_defaults_the_timestamp_to_now_in_milliseconds() -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    stored = AuditEvent.objects.get(pk=record(timestamp=None).pk)
    assert before <= stored.timestamp <= datetime.now(UTC)
    assert stored.timestamp.microsecond % 1000 == 0


def test_full_response_is_stored_compact_exactly_as_received() -> None:
    # The parsed dict is deliberately different: the ledger must be built from the wire
    # text, never from a dict someone may have touched after receiving it.
    received = Mka1Object(data={"id": "resp_abc123", "status": "tampered"}, raw=WIRE_TEXT)

    stored = AuditEvent.objects.get(pk=record(full_response=received).pk)

    assert stored.full_response == STORED_TEXT
    assert stored.full_response.encode("utf-8") == STORED_TEXT.encode("utf-8")
    assert "tampered" not in stored.full_response


def test_full_response_that_is_not_json_is_refused() -> None:
    with pytest.raises(json.JSONDecodeError):
        record(full_response=Mka1Object(data={}, raw='{"id": "resp_abc123",'))
    assert not AuditEvent.objects.exists()


def test_full_response_given_as_a_mapping_is_stored_compact_in_its_order() -> None:
    given = {"z": 1, "a": {"y": "ü", "b": None}, "m": [1.5, True]}
    stored = AuditEvent.objects.get(pk=record(full_response=given).pk)
    assert stored.full_response == '{"z":1,"a":{"y":"ü","b":null},"m":[1.5,true]}'


def test_full_response_none_is_stored_as_json_null() -> None:
    stored = AuditEvent.objects.get(pk=record(full_response=None).pk)
    assert stored.full_response == "null"


# --- indexes ----------------------------------------------------------------------


@pytest.mark.parametrize("column", ["response_id", "conversation_id", "end_user_id", "timestamp"])
def test_lookup_columns_are_indexed(column: str) -> None:
    table = AuditEvent._meta.db_table
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    single_column_indexes = [
        name for name, info in constraints.items() if info["index"] and info["columns"] == [column]
    ]
    assert single_column_indexes, f"no index on {table}.{column}: {constraints}"


def test_the_model_declares_the_lookup_indexes() -> None:
    for column in ("response_id", "conversation_id", "end_user_id", "timestamp"):
        _, _, _, options = AuditEvent._meta.get_field(column).deconstruct()
        assert options.get("db_index"), column
    composite = {tuple(index.fields) for index in AuditEvent._meta.indexes}
    assert ("end_user_id", "timestamp") in composite


def test_djangos_base_manager_is_guarded_too() -> None:
    audit_event_record(channel="whatsapp", action="responses.create", end_user_id="user_1")
    with pytest.raises(AppendOnlyError):
        AuditEvent._base_manager.all().delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent._base_manager.all().update(channel="webapp")
    assert AuditEvent.objects.get().channel == "whatsapp"
