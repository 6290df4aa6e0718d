"""Bad input changes nothing, checked by property (hypothesis): random and mutated webhook
bodies and signatures, random retrieval paths. Whatever arrives, the answer is never a
5xx; an unsigned or badly signed webhook stores no row; a refused request records no
audit event.

Each example runs in a savepoint that is rolled back afterwards, so every example starts
from the same database (the pytest-django test transaction is shared by all examples).
Examples are derandomized and no example database is kept: CI sees the same examples on
every run."""

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.apps import apps
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Max
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multichannel.models import EndUser, UserMessage
from multichannel.sandbox import whatsapp as wa
from tests.support.webhooks import webhook_post
from web.services import LOGIN
from whatsapp.models import WebhookDelivery

pytestmark = pytest.mark.django_db

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    # The fixtures (client, database) are set up once per test on purpose; every example
    # resets the database itself (see `rolled_back`).
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Every app whose rows a request could write. The sandbox stands in for MKA1 and the
# Graph API, so a call that reached either would show there too.
APPS = ("whatsapp", "multichannel", "audit", "sandbox")

Counts = dict[str, int]


def row_counts() -> Counts:
    """Rows per model of every app in APPS, read in one query."""
    models = [model for label in APPS for model in apps.get_app_config(label).get_models()]
    tables = [connection.ops.quote_name(model._meta.db_table) for model in models]
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {t})" for t in tables))
        counts = cursor.fetchone()
    return {model._meta.label: count for model, count in zip(models, counts, strict=True)}


def changed(before: Counts, after: Counts) -> Counts:
    return {
        label: after[label] - before[label] for label in before if after[label] != before[label]
    }


@contextmanager
def rolled_back() -> Iterator[None]:
    """One example's writes, undone when it ends (on_commit callbacks registered inside
    are dropped with the savepoint)."""
    cache.clear()  # throttle counters: every example reaches the view
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def secret() -> str:
    return str(django_settings.WHATSAPP_APP_SECRET)


def post(client: Client, body: bytes, signature: str | None) -> Any:
    return webhook_post(body, client=client, signature=signature)


# --- strategies -----------------------------------------------------------------------------

# What a WSGI server can hand over as a header value: latin-1 text.
header_text = st.text(st.characters(codec="latin-1"), max_size=80)
# Any code point, NUL and lone surrogates included: json.loads accepts "\u0000" and
# "\ud800", and neither can be stored everywhere.
tricky_characters = st.sampled_from(["\x00", "\ud800", "\udfff", "\U0001f600", "\u202e", "\u00e9"])
unicode_text = st.text(st.characters(exclude_categories=()) | tricky_characters, max_size=40)
odd_text = st.lists(tricky_characters, min_size=1, max_size=8).map("".join)
huge_text = st.integers(2_000, 20_000).flatmap(
    lambda size: st.sampled_from(["x", "\u00e9", "\U0001f600", "\\", '"', "\u202e", "\x00"]).map(
        lambda char: char * size
    )
)
# Python's json module reads NaN and Infinity, which no JSON column stores.
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | unicode_text
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)


def nested(depth: int) -> Any:
    value: Any = "junk"
    for level in range(depth):
        value = [value] if level % 2 else {"v": value}
    return value


nested_junk = st.integers(1, 300).map(nested)
# Ids around the lengths of the columns they are stored in (32, 64, 128, 255).
odd_ids = st.integers(1, 300).flatmap(
    lambda size: st.sampled_from(["7", "x", "\u00e9", "\x00"]).map(lambda char: char * size)
)
ID_FIELDS = ("id", "from", "from_user_id", "wa_id", "user_id", "phone_number_id")


def encode(value: Any, *, ascii_only: bool = True) -> bytes:
    # A lone surrogate has no UTF-8 form; "surrogatepass" sends the bytes Python would.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# A value of some other type than the one Meta sends: str <-> int <-> list <-> null ...
swapped = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | unicode_text
    | st.lists(json_scalars, max_size=3)
    | st.dictionaries(st.text(max_size=8), json_scalars, max_size=3)
    | huge_text
    | nested_junk
)


# Drawn, not random, so that examples are reproducible.
wamids = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=4, max_size=24).map(
    lambda suffix: f"wamid.{suffix}"
)


@st.composite
def meta_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A valid `whatsapp_business_account` webhook: messages and/or statuses, built with
    the sandbox's helpers (ids and timestamps drawn, so examples are reproducible)."""
    senders = st.sampled_from(["15550000001", "15550000002", "15551234567"])
    events = draw(
        st.lists(
            st.builds(
                wa.message_event,
                wa_id=senders | st.none(),
                bsuid=st.none() | st.sampled_from(["US.13491208655302741918", "BR.1502"]),
                text=unicode_text | st.just("LOGIN") | odd_text,
                message_type=st.sampled_from(["text", "text", "location", "unknown"]),
                message_id=wamids,
                timestamp=st.integers(0, 2_000_000_000),
            ).filter(
                lambda event: "from" in event["message"] or "from_user_id" in event["message"]
            ),
            max_size=3,
        )
    )
    statuses = draw(
        st.lists(
            st.builds(
                wa.status_event,
                wamids,
                st.sampled_from(["sent", "delivered", "read", "failed", "deleted"]),
                timestamp=st.integers(0, 2_000_000_000),
            ),
            max_size=3,
        )
    )
    return wa.webhook_payload(events, statuses=statuses)


def paths_in(tree: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from paths_in(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from paths_in(value, (*prefix, index))


def at(tree: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        tree = tree[step]
    return tree


@st.composite
def mutated_payloads(draw: st.DrawFn) -> Any:
    """A Meta payload with one to four structural mutations: a field deleted, a value of
    another type, a huge or odd string, nested junk, an unknown `object` or `field`."""
    payload: Any = draw(meta_payloads())
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(paths_in(payload))))
        operation = draw(st.sampled_from(["delete", "swap", "add", "unknown-name", "odd-id"]))
        if operation == "odd-id":
            ids = [p for p in paths_in(payload) if p and p[-1] in ID_FIELDS]
            if ids:
                chosen = draw(st.sampled_from(ids))
                at(payload, chosen[:-1])[chosen[-1]] = draw(odd_ids)
            continue
        if operation == "unknown-name":
            names = [p for p in paths_in(payload) if p and p[-1] in ("object", "field")]
            if names:
                parent = at(payload, draw(st.sampled_from(names))[:-1])
                key = "object" if "object" in parent else "field"
                parent[key] = draw(
                    st.sampled_from(["instagram", "page", "flows", "", "MESSAGES"]) | unicode_text
                )
            continue
        if not path:
            if operation == "swap":
                payload = draw(swapped)
            continue
        parent = at(payload, path[:-1])
        if operation == "delete":
            del parent[path[-1]]
        elif operation == "swap":
            parent[path[-1]] = draw(swapped)
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(swapped)
        else:
            parent.insert(path[-1], draw(swapped))
    return payload


@st.composite
def tampered(draw: st.DrawFn, body: bytes) -> bytes:
    """The body changed after it was signed: a bit flipped, cut short, or bytes inserted."""
    operation = draw(st.sampled_from(["flip", "truncate", "insert"] if body else ["insert"]))
    if operation == "insert":
        index = draw(st.integers(0, len(body)))
        return body[:index] + draw(st.binary(min_size=1, max_size=16)) + body[index:]
    index = draw(st.integers(0, len(body) - 1))
    if operation == "truncate":
        return body[:index]
    flipped = body[index] ^ (1 << draw(st.integers(0, 7)))
    return body[:index] + bytes([flipped]) + body[index + 1 :]


bodies = st.binary(max_size=300) | json_values.map(encode) | meta_payloads().map(wa.encode)


@st.composite
def badly_signed(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A body and an X-Hub-Signature-256 value (None: no header) that do not match."""
    body = draw(bodies)
    digest = wa.sign(body, secret()).removeprefix("sha256=")
    kind = draw(
        st.sampled_from(
            ["none", "empty", "prefix", "hex", "other-body", "other-secret", "tampered"]
        )
    )
    if kind == "none":
        return body, None
    if kind == "empty":
        return body, ""
    if kind == "prefix":
        prefix = draw(
            st.sampled_from(["", "sha1=", "sha512=", "sha256:", "sha256 =", "sha-256="])
            | header_text.filter(lambda text: not text.lower().lstrip().startswith("sha256="))
        )
        return body, prefix + digest
    if kind == "hex":
        garbage = draw(
            (
                header_text
                | st.text("0123456789abcdefABCDEF", min_size=1, max_size=80)
                | st.integers(0, 63).flatmap(
                    lambda i: st.sampled_from("0123456789abcdef").map(
                        lambda c: digest[:i] + c + digest[i + 1 :]
                    )
                )
            ).filter(lambda text: digest not in text.lower())
        )
        return body, "sha256=" + garbage
    if kind == "other-body":
        other = draw(bodies.filter(lambda other: other != body))
        return body, wa.sign(other, secret())
    if kind == "other-secret":
        other_secret = draw(st.text(min_size=1, max_size=40).filter(lambda s: s != secret()))
        return body, wa.sign(body, other_secret)
    return draw(tampered(body)), wa.sign(body, secret())


# --- webhook ------------------------------------------------------------------------------


def test_unsigned_or_badly_signed_webhooks_store_nothing(client: Client) -> None:
    @PROPERTY
    @given(request=badly_signed())
    def check(request: tuple[bytes, str | None]) -> None:
        body, signature = request
        with rolled_back():
            before = row_counts()
            answer = post(client, body, signature)
            assert answer.status_code == (401 if not signature else 403)
            assert changed(before, row_counts()) == {}

    check()


def _answered_messages(after_id: int) -> int:
    # TEXT is answered through MKA1 and LOGIN with a sign-in link: both are audited.
    kinds = (UserMessage.Kind.TEXT, LOGIN)
    return UserMessage.objects.filter(id__gt=after_id, kind__in=kinds).count()


def _post_signed(
    client: Client, capture: Callable[..., Any], body: bytes, caplog: pytest.LogCaptureFixture
) -> Any:
    """POST a correctly signed body, let the queued work run, and check what changed.
    Returns the stored payload, or None if the body was refused."""
    before = row_counts()
    last_id = UserMessage.objects.aggregate(last=Max("id"))["last"] or 0
    caplog.clear()
    with capture(execute=True):
        answer = post(client, body, wa.sign(body, secret()))
    after = row_counts()
    assert answer.status_code in (200, 400), answer.content
    if answer.status_code != 200:
        assert changed(before, after) == {}
        return None
    delivery = WebhookDelivery.objects.latest("id")
    assert delivery.raw_body == body.decode(errors="replace")  # kept as received
    assert after["whatsapp.WebhookDelivery"] == before["whatsapp.WebhookDelivery"] + 1
    if after["audit.AuditEvent"] != before["audit.AuditEvent"]:
        assert _answered_messages(last_id) > 0, changed(before, after)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    return json.loads(body)


def test_signed_junk_gets_a_clean_400_or_is_kept_as_received(
    client: Client, django_capture_on_commit_callbacks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    junk = (
        st.binary(max_size=300)
        | json_values.map(encode)
        | st.dictionaries(st.text(max_size=12), json_values, max_size=5).map(
            lambda value: encode(value, ascii_only=False)
        )
        | nested_junk.map(lambda value: encode({"object": value}))
    )

    @PROPERTY
    @given(body=junk)
    def check(body: bytes) -> None:
        with rolled_back():
            payload = _post_signed(client, django_capture_on_commit_callbacks, body, caplog)
        if payload is not None:
            assert isinstance(payload, dict)

    check()


def test_mutated_meta_payloads_get_200_or_a_clean_400_and_unknown_shapes_no_audit(
    client: Client, django_capture_on_commit_callbacks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    @PROPERTY
    @given(payload=mutated_payloads(), ascii_only=st.booleans())
    def check(payload: Any, ascii_only: bool) -> None:
        body = encode(payload, ascii_only=ascii_only)
        with rolled_back():
            before = row_counts()
            stored = _post_signed(client, django_capture_on_commit_callbacks, body, caplog)
            if stored is None:
                return
            known = stored.get("object") == "whatsapp_business_account"
            if not known:
                # An unknown shape is kept (raw) and acknowledged, and nothing else.
                assert changed(before, row_counts()) == {"whatsapp.WebhookDelivery": 1}

    check()


# --- retrieval ------------------------------------------------------------------------------

resp_like = st.from_regex(r"\Aresp[-_][a-zA-Z0-9]{1,40}\Z")
percent_escapes = st.lists(st.integers(0, 255), min_size=1, max_size=12).map(
    lambda octets: "".join(f"%{octet:02X}" for octet in octets)
)
path_pieces = unicode_text | st.sampled_from(["/", "//", "..", "%2F", "%00", "?", "#", "%"])


def retrieval_paths(real_id: str) -> st.SearchStrategy[str]:
    return (
        st.text()
        | resp_like
        | st.tuples(resp_like, path_pieces).map("".join)
        | st.tuples(path_pieces, resp_like).map("".join)
        | st.lists(path_pieces | percent_escapes | resp_like, max_size=6).map("".join)
        | huge_text
        | st.integers(1, 20_000).map(lambda n: "resp_" + "a" * n)
        | st.sampled_from(
            [real_id, real_id.upper(), real_id[:-1], real_id + "/", f"{real_id}%20", real_id * 2]
        )
    )


def test_retrieval_paths_get_only_expected_answers_and_audit_only_success(
    client: Client, web_client: Any, whatsapp_says: Any
) -> None:
    message = whatsapp_says("What is the capital of France?")
    message.refresh_from_db()
    real_id = message.turn.response_id
    callers = {
        "signed out": client,
        "owner": web_client(message.end_user),
        "stranger": web_client(EndUser.objects.create()),
    }

    @PROPERTY
    @given(text=retrieval_paths(real_id), caller=st.sampled_from(sorted(callers)))
    def check(text: str, caller: str) -> None:
        with rolled_back():
            before = row_counts()
            answer = callers[caller].get(f"/api/multichannel/{text}")
            assert answer.status_code in (200, 400, 401, 403, 404), (answer.status_code, text)
            assert answer["Content-Type"] == "application/json"
            if answer.status_code == 200:
                assert caller == "owner"
                assert answer.json()["response_id"] == real_id
                assert changed(before, row_counts()) == {"audit.AuditEvent": 1}
            else:
                assert changed(before, row_counts()) == {}

    check()


# --- cases these properties found ---------------------------------------------------------


def test_a_signature_header_with_non_ascii_text_is_403(client: Client) -> None:
    # compare_digest raised TypeError on it: a 500 for any unauthenticated caller.
    body = wa.encode(wa.webhook_payload([wa.message_event()]))
    assert post(client, body, "sha256=\x80").status_code == 403
    assert post(client, body, "sha256=" + "\u00e9" * 64).status_code == 403
    assert not WebhookDelivery.objects.exists()


def _event_with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    event = wa.message_event(wa_id="15550000001", message_id="wamid.ODD", timestamp=1)
    payload = wa.webhook_payload([event])
    change(payload["entry"][0]["changes"][0]["value"])
    return payload


def _message(value: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = value["messages"][0]
    return message


@pytest.mark.parametrize(
    ("change", "stored_text"),
    [
        # Values PostgreSQL refused (a DataError, so a 500 and Meta redelivering the whole
        # batch forever) or that no database could store (a lone surrogate).
        (lambda value: _message(value)["text"].update(body="a\x00b"), "a\ufffdb"),
        (lambda value: _message(value)["text"].update(body="\ud800!"), "\ufffd!"),
        (lambda value: _message(value).update(extra=[float("nan"), float("inf")]), "Hello"),
        (lambda value: _message(value).update(extra={"\x00": "\udfff"}), "Hello"),
        (lambda value: value["metadata"].update(phone_number_id="9" * 65), "Hello"),
        (lambda value: _message(value).update(extra=nested(300)), "Hello"),
    ],
    ids=["nul", "lone-surrogate", "nan", "nul-key", "long-phone-number-id", "deep"],
)
def test_values_no_database_stores_are_replaced_and_the_message_kept(
    post_webhook: Any, change: Callable[[dict[str, Any]], None], stored_text: str
) -> None:
    payload = _event_with(change)
    body = json.dumps(payload).encode()  # escapes as Meta would: "\u0000", "\ud800", NaN
    assert post_webhook(raw=body).status_code == 200
    assert WebhookDelivery.objects.get().raw_body == body.decode()
    message = UserMessage.objects.get(external_id="wamid.ODD")
    assert message.text == stored_text
    json.dumps(message.whatsapp_inbound.raw, allow_nan=False)  # plain JSON


@pytest.mark.parametrize(
    "change",
    [
        lambda value: _message(value).update(id="w" * 256),
        lambda value: (
            _message(value).update({"from": "1" * 33}),
            value["contacts"][0].update(wa_id="1" * 33),
        ),
        lambda value: (
            _message(value).pop("from"),
            _message(value).update(from_user_id="U" * 129),
            value["contacts"][0].clear(),
        ),
    ],
    ids=["wamid", "wa_id", "bsuid"],
)
def test_ids_longer_than_their_columns_are_skipped_and_the_delivery_kept(
    post_webhook: Any, change: Callable[[dict[str, Any]], Any]
) -> None:
    payload = _event_with(change)
    payload["entry"][0]["changes"][0]["value"]["messages"].append(
        wa.message_event(message_id="wamid.FINE", timestamp=2)["message"]
    )
    assert post_webhook(payload).status_code == 200
    assert WebhookDelivery.objects.count() == 1
    assert list(UserMessage.objects.values_list("external_id", flat=True)) == ["wamid.FINE"]
