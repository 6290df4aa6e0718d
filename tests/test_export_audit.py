"""`manage.py export_audit`: the exact JSONL format, every filter, atomic file output,
one-line errors for bad arguments, and flat memory on large exports."""

import csv
import errno
import io
import json
import os
import random
import re
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from audit import jsonl
from audit.integrity import format_timestamp
from audit.jsonl import SEED_KEYS, event_line, seed_fields, values_line
from audit.management.commands import export_audit
from audit.models import AuditEvent
from audit.services import audit_event_record
from multichannel.mka1 import Mka1Object
from tests.support.audit_rows import chain_placeholders, insert_audit_rows

pytestmark = pytest.mark.django_db

GOLDEN = Path(__file__).parent / "golden" / "export_seed.jsonl"

# The seed guide's two events, as MKA1 might put them on the wire (the formatting is
# deliberately untidy; the export must carry them compact, in the order received).
CREATE_WIRE = """{
  "id": "resp_abc123",
  "object": "response",
  "created_at": 1774897814,
  "status": "completed",
  "model": "meetkai:functionary-pt",
  "conversation": { "id": "conv_abc123" },
  "previous_response_id": null,
  "output": [
    {
      "type": "message",
      "id": "msg_abc123",
      "status": "completed",
      "role": "assistant",
      "content": [
        {
          "type": "output_text",
          "text": "¡Hola! Mañana hará 21 °C en São Paulo 🌤",
          "annotations": []
        }
      ]
    }
  ],
  "output_text": "¡Hola! Mañana hará 21 °C en São Paulo 🌤",
  "temperature": 1.0,
  "usage": {"input_tokens": 18, "output_tokens": 14, "total_tokens": 32},
  "metadata": {"channel": "whatsapp"}
}
"""
GET_WIRE = (
    '{"id": "resp_abc123", "object": "response", "created_at": 1774897814, '
    '"status": "completed", "model": "meetkai:functionary-pt", '
    '"conversation": {"id": "conv_abc123"}, "previous_response_id": null, '
    '"output": [{"type": "message", "id": "msg_abc123", "status": "completed", '
    '"role": "assistant", "content": [{"type": "output_text", '
    '"text": "¡Hola! Mañana hará 21 °C en São Paulo 🌤", "annotations": []}]}], '
    '"output_text": "¡Hola! Mañana hará 21 °C en São Paulo 🌤", "temperature": 1.0, '
    '"usage": {"input_tokens": 18, "output_tokens": 14, "total_tokens": 32}, '
    '"metadata": {"channel": "whatsapp"}}'
)


def seed_events() -> None:
    audit_event_record(
        timestamp=datetime(2026, 3, 30, 19, 10, 14, 412, tzinfo=UTC),  # 412 µs: cut off
        channel="whatsapp",
        action="responses.create",
        end_user_id="123",
        response_id="resp_abc123",
        conversation_id="conv_abc123",
        previous_response_id=None,
        full_response=Mka1Object(data=json.loads(CREATE_WIRE), raw=CREATE_WIRE),
        api_key_fingerprint="sha256:0123456789abcdef",
        context={"wamid": "wamid.HBgM"},
    )
    audit_event_record(
        timestamp=datetime(2026, 3, 30, 19, 11, 2, tzinfo=UTC),
        channel="webapp",
        action="responses.get",
        end_user_id="123",
        response_id="resp_abc123",
        conversation_id="conv_abc123",
        full_response=Mka1Object(data=json.loads(GET_WIRE), raw=GET_WIRE),
        api_key_fingerprint="sha256:0123456789abcdef",
    )


def export(*args: str) -> str:
    out = StringIO()
    call_command("export_audit", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- the format -------------------------------------------------------------------


def test_export_matches_the_golden_file_byte_for_byte() -> None:
    seed_events()
    assert export().encode("utf-8") == GOLDEN.read_bytes()


def test_export_to_a_file_matches_the_golden_file_byte_for_byte(tmp_path: Path) -> None:
    seed_events()
    target = tmp_path / "audit.jsonl"
    err = StringIO()
    call_command("export_audit", "--output", str(target), stdout=StringIO(), stderr=err)
    assert target.read_bytes() == GOLDEN.read_bytes()
    assert err.getvalue() == f"exported 2 events to {target}\n"


def test_export_to_stdout_is_utf8_whatever_the_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    seed_events()
    raw = io.BytesIO()
    ascii_stdout = io.TextIOWrapper(raw, encoding="ascii", newline="\n")
    monkeypatch.setattr(sys, "stdout", ascii_stdout)
    call_command("export_audit", stderr=StringIO())  # no stdout=: the real sys.stdout path
    ascii_stdout.flush()
    assert raw.getvalue() == GOLDEN.read_bytes()


def test_golden_lines_have_the_seed_format() -> None:
    # What the golden file pins down, asserted piece by piece so a wrong golden file
    # cannot pass unnoticed.
    data = GOLDEN.read_bytes()
    assert data.endswith(b"}\n")
    assert b"\r" not in data
    assert "São Paulo 🌤".encode() in data  # UTF-8, not \u escapes
    assert b"\\u" not in data
    for line in data.decode("utf-8").splitlines():
        keys = json.loads(line, object_pairs_hook=lambda pairs: [key for key, _ in pairs])
        assert tuple(keys) == SEED_KEYS
        event = json.loads(line)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["timestamp"])
        assert line == json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        assert '"previous_response_id":null,' in line
        assert line.startswith('{"timestamp":"2026-03-30T19:1')
        response_keys = json.loads(
            json.dumps(event["full_response"]),
            object_pairs_hook=lambda pairs: [key for key, _ in pairs],
        )
        assert response_keys[:3] == ["id", "object", "created_at"]  # as received, not sorted
        assert "api_key_fingerprint" not in event
        assert "context" not in event


def test_event_line_of_a_model_instance_is_the_exported_line() -> None:
    seed_events()
    lines = [event_line(event) + "\n" for event in AuditEvent.objects.all()]
    assert "".join(lines).encode("utf-8") == GOLDEN.read_bytes()


def test_export_of_nothing_is_empty() -> None:
    assert export() == ""


def test_full_response_is_exported_exactly_as_stored() -> None:
    wire = '{ "z" : 1E400 , "a" : "tab\\there" , "n" : 1.50 }'
    audit_event_record(
        channel="webapp",
        action="responses.get",
        end_user_id="123",
        full_response=Mka1Object(data={}, raw=wire),
        timestamp=datetime(2026, 3, 30, 19, 10, 14, 999999, tzinfo=UTC),
    )
    assert export() == (
        '{"timestamp":"2026-03-30T19:10:14.999Z","channel":"webapp","action":"responses.get",'
        '"end_user_id":"123","response_id":null,"conversation_id":null,'
        '"previous_response_id":null,"full_response":{"z":1E400,"a":"tab\\there","n":1.50}}\n'
    )


def test_strings_are_json_escaped_but_non_ascii_is_not() -> None:
    audit_event_record(
        channel="whatsapp",
        action="responses.create",
        end_user_id='Zoë "quoted" \\ tab\t',
        response_id="resp_1",
        timestamp=datetime(2026, 3, 30, 19, 10, 14, tzinfo=UTC),
    )
    line = export()
    assert '"end_user_id":"Zoë \\"quoted\\" \\\\ tab\\t"' in line
    assert json.loads(line)["end_user_id"] == 'Zoë "quoted" \\ tab\t'


def test_format_timestamp_is_the_strftime_text_for_any_moment() -> None:
    # The hash chain's digests cover this text: the isoformat() shortcut must give the
    # strftime text it replaced, byte for byte, naive or aware, any year.
    def by_strftime(moment: datetime) -> str:
        moment = moment.astimezone(UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    rng = random.Random(20260330)
    zones = [None, UTC, ZoneInfo("Europe/Berlin"), ZoneInfo("America/St_Johns")]
    moments = [
        datetime(2026, 3, 30, 19, 10, 14, 999999, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
        datetime(1000, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    for _ in range(2000):
        moments.append(
            datetime(
                rng.randint(2, 9998), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999999),
                tzinfo=rng.choice(zones),
            )
        )  # fmt: skip
    for moment in moments:
        assert format_timestamp(moment) == by_strftime(moment), moment


def test_the_fast_export_path_writes_what_values_line_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The export selects the timestamp as UTC wall-clock time (decoded by the driver
    # alone); the lines must be values_line's for the same events, at the edges of the
    # timestamp format too: sub-millisecond parts cut, not rounded; another time zone;
    # a year before 1000.
    moments = [
        datetime(2026, 3, 30, 19, 10, 14, 999999, tzinfo=UTC),
        datetime(2026, 3, 30, 19, 10, 14, 1000, tzinfo=UTC),
        datetime(2026, 3, 30, 21, 10, 14, 412, tzinfo=ZoneInfo("Europe/Berlin")),
        datetime(2026, 12, 31, 23, 59, 59, 999500, tzinfo=UTC),
        datetime(2026, 3, 29, 0, 0, tzinfo=UTC),
        datetime(999, 1, 2, 3, 4, 5, 6000, tzinfo=UTC),
    ]
    for n, moment in enumerate(moments):
        audit_event_record(
            timestamp=moment,
            channel="whatsapp",
            action="responses.create",
            end_user_id=f'Zoë "{n}" \\ \t',
            response_id=None if n % 2 else f"resp_{n}",
            conversation_id=None if n % 3 else f"conv_{n}",
            previous_response_id=f"resp_{n - 1}" if n else None,
            full_response={"n": n, "text": "São Paulo 🌤"},
        )
    rows = AuditEvent.objects.order_by("sequence").values_list(*seed_fields())
    expected = "".join(values_line(row) + "\n" for row in rows)
    assert export() == expected
    monkeypatch.setattr(jsonl, "utc_wall_clock_selectable", lambda connection: False)
    assert export() == expected


def awkward_rows(n: int) -> dict[str, Any]:
    """Events whose every string needs escaping somewhere, and bodies that are not what
    the recorder would store (a raw newline, raw control characters, the COPY quote and
    delimiter characters): whatever is in the table, both paths write the same bytes."""
    strings = [
        'Zoë "quoted" \\ tab\t',
        "\x01\x02\x1f\x7f \u2028\u2029 🌤",
        "\b\f\n\r",
        "plain",
    ]
    bodies = [
        f'{{"n":{n}}}',
        f'{{\n"n": {n},\r\n"raw":"\x01\x02"}}',
        "null",
        f'{{"n":{n},"s":"São Paulo 🌤 \\u0001"}}',
    ]
    moments = [
        datetime(2026, 3, 30, 19, 10, 14, 999999, tzinfo=UTC),
        datetime(999, 1, 2, 3, 4, 5, 6000, tzinfo=UTC),
        datetime(2026, 3, 30, 21, 10, 14, 412, tzinfo=ZoneInfo("Europe/Berlin")),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
    ]
    return {
        **chain_placeholders(n),
        "timestamp": connection.ops.adapt_datetimefield_value(moments[n % len(moments)]),
        "channel": "webapp" if n % 2 else "whatsapp",
        "action": "responses.get",
        "end_user_id": strings[n % len(strings)],
        "response_id": None if n % 3 == 0 else strings[(n + 1) % len(strings)],
        "conversation_id": None if n % 3 == 1 else strings[(n + 2) % len(strings)],
        "previous_response_id": None if n % 3 == 2 else strings[(n + 3) % len(strings)],
        "api_key_fingerprint": "fp",
        "context": "{}",
        "full_response": bodies[n % len(bodies)],
    }


@pytest.mark.parametrize("rows", [7, 2 * jsonl.ROWS_PER_BLOCK + 3])
def test_every_export_path_writes_the_same_bytes_for_awkward_rows(
    rows: int, tmp_path: Path
) -> None:
    # PostgreSQL builds the lines itself (SeedLine, streamed by COPY); they must be the
    # bytes values_line writes for the same rows, into a file and onto a text stream.
    insert_audit_rows(awkward_rows, 0, rows)
    selected = AuditEvent.objects.order_by("sequence").values_list(*seed_fields())
    expected = "".join(values_line(row) + "\n" for row in selected)
    assert expected.count("\n") > rows  # raw newlines in some bodies, as stored
    assert export() == expected
    target = tmp_path / "out.jsonl"
    call_command("export_audit", "--output", str(target), stdout=StringIO(), stderr=StringIO())
    assert target.read_bytes() == expected.encode()
    plain = selected.filter(end_user_id="plain")
    assert plain
    assert export("--end-user", "plain") == "".join(values_line(row) + "\n" for row in plain)


def test_postgresql_exports_with_copy_and_sqlite_in_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The seed export on PostgreSQL does not format lines in Python; no other database
    # is sent PostgreSQL's COPY.
    seed_events()

    def refused(*args: Any) -> None:
        raise AssertionError("the other database's path")

    other = (
        "seed_fields_and_line" if connection.vendor == "postgresql" else "postgresql_seed_blocks"
    )
    monkeypatch.setattr(export_audit, other, refused)
    assert export().encode("utf-8") == GOLDEN.read_bytes()


# --- filters ----------------------------------------------------------------------

T0 = datetime(2026, 3, 30, 19, 10, 14, tzinfo=UTC)


@pytest.fixture
def events() -> None:
    """Five events, recorded oldest first as in production (where the timestamp is taken
    when recording); `n` in full_response names them."""

    def add(n: int, at: datetime, channel: str, action: str, user: str, conv: str) -> None:
        responses = {"alice": "resp_a1", "bob": "resp_b1"}
        audit_event_record(
            timestamp=at,
            channel=channel,
            action=action,
            end_user_id=user,
            response_id=responses[user] if action.startswith("responses.") else None,
            conversation_id=conv,
            full_response={"n": n},
        )

    add(5, T0 - timedelta(seconds=1), "whatsapp", "conversations.create", "alice", "conv_a")
    add(1, T0, "whatsapp", "responses.create", "alice", "conv_a")
    # Same instant, recorded later; "webapp" sorts before "whatsapp", so only the
    # recording order (id) puts it second.
    add(2, T0, "webapp", "responses.get", "alice", "conv_a")
    add(3, T0 + timedelta(seconds=1), "whatsapp", "responses.create", "bob", "conv_b")
    add(4, T0 + timedelta(seconds=2), "webapp", "responses.get", "bob", "conv_b")


def exported_numbers(*args: str) -> list[int]:
    return [json.loads(line)["full_response"]["n"] for line in export(*args).splitlines()]


@pytest.mark.usefixtures("events")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param([], [5, 1, 2, 3, 4], id="all, oldest first, ties in recording order"),
        pytest.param(["--since", "2026-03-30T19:10:14Z"], [1, 2, 3, 4], id="since inclusive"),
        pytest.param(["--since", "2026-03-30T19:10:14.001Z"], [3, 4], id="since in ms"),
        pytest.param(["--since", "2026-03-30T21:10:14+02:00"], [1, 2, 3, 4], id="since tz"),
        pytest.param(["--since", "2026-03-30T19:10:14"], [1, 2, 3, 4], id="naive since is UTC"),
        pytest.param(["--until", "2026-03-30T19:10:16Z"], [5, 1, 2, 3], id="until exclusive"),
        pytest.param(["--until", "2026-03-30T19:10:14Z"], [5], id="until excludes the instant"),
        pytest.param(["--until", "2026-03-31"], [5, 1, 2, 3, 4], id="until a date"),
        pytest.param(["--since", "2026-03-31"], [], id="since a date"),
        pytest.param(
            ["--since", "2026-03-30T19:10:14Z", "--until", "2026-03-30T19:10:15Z"],
            [1, 2],
            id="since and until",
        ),
        pytest.param(["--end-user", "alice"], [5, 1, 2], id="end user"),
        pytest.param(["--end-user", "carol"], [], id="unknown end user"),
        pytest.param(["--conversation", "conv_b"], [3, 4], id="conversation"),
        pytest.param(["--response", "resp_a1"], [1, 2], id="response"),
        pytest.param(["--channel", "webapp"], [2, 4], id="channel"),
        pytest.param(["--action", "responses.create"], [1, 3], id="action"),
        pytest.param(
            ["--end-user", "alice", "--channel", "whatsapp", "--since", "2026-03-30T19:10:14Z"],
            [1],
            id="user, channel and since",
        ),
        pytest.param(
            ["--conversation", "conv_b", "--response", "resp_b1", "--action", "responses.get"],
            [4],
            id="conversation, response and action",
        ),
        pytest.param(["--end-user", "alice", "--conversation", "conv_b"], [], id="disjoint"),
    ],
)
def test_filters(args: list[str], expected: list[int]) -> None:
    assert exported_numbers(*args) == expected


@pytest.mark.usefixtures("events")
def test_a_response_filter_exports_the_create_and_the_retrieval_of_it() -> None:
    lines = [json.loads(line) for line in export("--response", "resp_b1").splitlines()]
    assert [(e["channel"], e["action"]) for e in lines] == [
        ("whatsapp", "responses.create"),
        ("webapp", "responses.get"),
    ]
    assert {(e["end_user_id"], e["conversation_id"]) for e in lines} == {("bob", "conv_b")}


# --- --output ---------------------------------------------------------------------


@pytest.mark.usefixtures("events")
def test_output_file_holds_exactly_the_lines(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("an older export\n")
    err = StringIO()
    call_command(
        "export_audit", "--output", str(target), "--end-user", "bob", stdout=StringIO(), stderr=err
    )
    assert target.read_text(encoding="utf-8") == export("--end-user", "bob")
    assert [json.loads(line)["full_response"]["n"] for line in target.open()] == [3, 4]
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]
    assert err.getvalue() == f"exported 2 events to {target}\n"


def fail_after(lines: int, exc: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    """The export fails once `lines` lines have been handed to the output, whichever
    path makes them (Python lines, or PostgreSQL's COPY blocks)."""
    blocks = export_audit.Command._blocks

    def failing_blocks(self: Any, *args: Any) -> Iterator[tuple[int, str]]:
        written = 0
        for count, text in blocks(self, *args):
            yield count, text
            written += count
            if written >= lines:
                raise exc

    monkeypatch.setattr(export_audit.Command, "_blocks", failing_blocks)


@pytest.mark.usefixtures("events")
def test_failed_write_leaves_an_existing_file_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"the previous export\n")
    fail_after(3, RuntimeError("database went away"), monkeypatch)

    with pytest.raises(RuntimeError, match="database went away"):
        call_command("export_audit", "--output", str(target), stdout=StringIO(), stderr=StringIO())

    assert target.read_bytes() == b"the previous export\n"
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]  # no temporary file left behind


@pytest.mark.usefixtures("events")
def test_disk_full_is_a_command_error_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.jsonl"
    fail_after(2, OSError(errno.ENOSPC, "No space left on device"), monkeypatch)

    with pytest.raises(CommandError) as raised:
        call_command("export_audit", "--output", str(target), stdout=StringIO(), stderr=StringIO())

    assert str(raised.value) == f"cannot write {target}: No space left on device"
    assert os.listdir(tmp_path) == []


def test_missing_output_directory_is_a_command_error(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "out.jsonl"
    with pytest.raises(CommandError, match="does not exist"):
        call_command("export_audit", "--output", str(target), stdout=StringIO(), stderr=StringIO())
    assert os.listdir(tmp_path) == []


def test_output_onto_a_directory_is_a_command_error(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(CommandError, match="cannot write"):
        call_command(
            "export_audit",
            "--output",
            str(tmp_path / "taken"),
            stdout=StringIO(),
            stderr=StringIO(),
        )
    assert os.listdir(tmp_path) == ["taken"]
    assert os.listdir(tmp_path / "taken") == []


@pytest.mark.usefixtures("events")
def test_output_dash_means_stdout() -> None:
    assert exported_numbers("--output", "-") == [5, 1, 2, 3, 4]


# --- bad arguments ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--since", "garbage"], "--since"),
        (["--until", "yesterday"], "--until"),
        (["--since", "2026-02-30T10:00:00Z"], "--since"),  # well-formed, impossible
        (["--until", "2026-13-01"], "--until"),
        (["--channel", "sms"], "--channel"),
        (["--end-user", ""], "--end-user"),  # an unset shell variable must not mean "all"
        (["--conversation", " "], "--conversation"),
        (["--response", ""], "--response"),
        (["--action", ""], "--action"),
    ],
)
def test_a_bad_argument_is_a_one_line_error_naming_the_option(args: list[str], option: str) -> None:
    with pytest.raises(CommandError) as raised:
        export(*args)
    message = str(raised.value)
    assert "\n" not in message
    assert f"argument {option}" in message
    assert "invalid utc_datetime value" not in message


def test_unparseable_since_says_what_is_expected() -> None:
    with pytest.raises(CommandError) as raised:
        export("--since", "garbage")
    assert str(raised.value) == (
        "argument --since: 'garbage' is not an ISO 8601 date or date-time "
        "(e.g. 2026-03-30T19:10:14Z)"
    )


@pytest.mark.parametrize(
    "until", ["2026-03-30T19:10:14Z", "2026-03-30T19:10:13.999Z", "2026-01-01"]
)
def test_since_not_before_until_is_refused(until: str) -> None:
    with pytest.raises(CommandError, match=r"^--since must be before --until$"):
        export("--since", "2026-03-30T19:10:14Z", "--until", until)


@pytest.mark.parametrize(
    ("args", "status", "stderr"),
    [
        (
            ["--since", "garbage"],
            2,
            "manage.py export_audit: error: argument --since: 'garbage' is not an ISO 8601 "
            "date or date-time (e.g. 2026-03-30T19:10:14Z)\n",
        ),
        (
            ["--since", "2026-03-31", "--until", "2026-03-30"],
            1,
            "CommandError: --since must be before --until\n",
        ),
    ],
)
def test_bad_arguments_from_the_shell_exit_non_zero_with_one_line(
    tmp_path: Path, args: list[str], status: int, stderr: str
) -> None:
    env = {
        **os.environ,
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'shell.sqlite3'}",
        "HUEY_SQLITE_PATH": str(tmp_path / "huey.sqlite3"),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "export_audit", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == status
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr == stderr


@pytest.mark.django_db(transaction=True)
def test_a_reader_that_stops_reading_ends_the_export_without_a_traceback(
    tmp_path: Path,
) -> None:
    # `export_audit | head`: the pipe closes long before the end (20 MB of lines).
    insert_audit_rows(awkward_rows, 0, 20_000)
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    else:
        url = f"sqlite:///{db['NAME']}"
    env = {
        **os.environ,
        "DEBUG": "true",
        "DATABASE_URL": url,
        "HUEY_SQLITE_PATH": str(tmp_path / "huey.sqlite3"),
    }
    with subprocess.Popen(
        [sys.executable, "manage.py", "export_audit"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as export_process:
        assert export_process.stdout is not None
        assert export_process.stderr is not None
        first = export_process.stdout.readline()
        export_process.stdout.close()
        stderr = export_process.stderr.read().decode()
        status = export_process.wait(timeout=60)
    assert json.loads(first)["end_user_id"] == awkward_rows(0)["end_user_id"]
    assert "Traceback" not in stderr, stderr
    assert stderr == ""
    assert status == 1


# --- memory -----------------------------------------------------------------------

MANY = 100_000
FULL_RESPONSE = json.dumps(
    {
        "id": "resp_PLACEHOLDER",
        "object": "response",
        "status": "completed",
        "conversation": {"id": "conv_PLACEHOLDER"},
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Antwort für Sie " * 12}],
            }
        ],
        "usage": {"input_tokens": 18, "output_tokens": 14, "total_tokens": 32},
    },
    ensure_ascii=False,
    separators=(",", ":"),
)


def insert_events(count: int) -> None:
    """Insert rows straight into the table: audit_event_record writes one row at a
    time (and the ORM refuses bulk_create on purpose), far too slow for 100k rows."""
    adapt = connection.ops.adapt_datetimefield_value

    def row(n: int) -> dict[str, Any]:
        resp, conv = f"resp_{n:07d}", f"conv_{n // 10:06d}"
        return {
            "timestamp": adapt(T0 + timedelta(milliseconds=n)),
            "channel": "whatsapp" if n % 2 else "webapp",
            "action": "responses.create" if n % 2 else "responses.get",
            "end_user_id": str(n % 1000),
            "response_id": resp,
            "conversation_id": conv,
            "previous_response_id": None,
            "full_response": FULL_RESPONSE.replace("resp_PLACEHOLDER", resp).replace(
                "conv_PLACEHOLDER", conv
            ),
            "api_key_fingerprint": "sha256:0123456789abcdef",
            "context": "{}",
            **chain_placeholders(n),
        }

    insert_audit_rows(row, 0, count)


def peak_python_memory(action: Any) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# Python-side peak (tracemalloc; SQLite's own page cache is not Python memory) for
# exporting 100k events: rows are fetched and written a chunk at a time, so the peak
# is a small fraction of what loading every row at once takes (both measured in
# docs/benchmarks.md). The bound leaves room for noise and other backends, yet fails
# long before an export holds a large share of the rows at once.
PEAK_BOUND = 16 * 1024 * 1024


@pytest.mark.slow
def test_exporting_100k_events_keeps_memory_flat(tmp_path: Path) -> None:
    insert_events(MANY)
    target = tmp_path / "big.jsonl"
    started = time.monotonic()

    peak = peak_python_memory(
        lambda: call_command(
            "export_audit", "--output", str(target), stdout=StringIO(), stderr=StringIO()
        )
    )

    elapsed = time.monotonic() - started
    assert peak < PEAK_BOUND, f"peak {peak / 2**20:.1f} MiB in {elapsed:.1f}s"
    with target.open("rb") as handle:
        first = json.loads(handle.readline())
        count = 1 + sum(1 for _ in handle)
    assert count == MANY
    assert first["timestamp"] == "2026-03-30T19:10:14.000Z"
    assert first["full_response"]["id"] == "resp_0000000"


# --- CSV -----------------------------------------------------------------------------------


def test_csv_has_the_seed_columns_and_full_response_as_json_text() -> None:
    seed_events()
    compact_get = json.dumps(json.loads(GET_WIRE), ensure_ascii=False, separators=(",", ":"))
    text = export("--format", "csv")
    lines = text.split("\r\n")
    assert lines[0] == (
        "timestamp,channel,action,end_user_id,response_id,conversation_id,"
        "previous_response_id,full_response"
    )
    assert lines[2] == (
        "2026-03-30T19:11:02.000Z,webapp,responses.get,123,resp_abc123,conv_abc123,,"
        + '"' + compact_get.replace('"', '""') + '"'
    )  # fmt: skip
    assert lines[3:] == [""]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [json.loads(row["full_response"]) for row in rows] == [
        json.loads(line)["full_response"] for line in export().splitlines()
    ]


def test_csv_with_integrity_carries_the_chain_columns(tmp_path: Path) -> None:
    seed_events()
    target = tmp_path / "audit.csv"
    call_command(
        "export_audit", "--format", "csv", "--with-integrity", "-o", str(target), stderr=StringIO()
    )
    rows = list(csv.DictReader(target.open(encoding="utf-8", newline="")))
    last = AuditEvent.objects.get(sequence=2)
    assert list(rows[1])[8:] == [
        "sequence",
        "api_key_fingerprint",
        "context",
        "content_digest",
        "previous_hash",
        "hash",
        "erased_by",
    ]
    assert (rows[1]["sequence"], rows[1]["hash"], rows[1]["erased_by"]) == ("2", last.hash, "")
    assert rows[0]["context"] == '{"wamid":"wamid.HBgM"}'


def test_the_default_format_is_still_jsonl() -> None:
    seed_events()
    assert export("--format", "jsonl") == export() == GOLDEN.read_text(encoding="utf-8")
