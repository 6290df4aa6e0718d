"""Fuzz the web API from its own OpenAPI schema (schemathesis): whatever a client sends,
signed in or not, the answer is never a 5xx and is what the schema documents (status
code, content type, body)."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client, override_settings
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from multichannel.mka1 import client
from multichannel.models import UserMessage
from multichannel.wsgi import application
from web.auth import SendThrottle

# schemathesis calls the WSGI application in-process with this Host header.
HOST = "localhost"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Bounded and derandomized, with no example database: CI sees the same examples on every
# run. Within one operation the examples share the database, as a real client's would.
FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None)

# Loaded as a client would, from the served schema. At import time Django's test
# environment (which allows the test host) is not set up yet.
with override_settings(ALLOWED_HOSTS=[HOST]):
    schema = schemathesis.openapi.from_wsgi(
        "/api/schema", application, headers={"Accept": "application/vnd.oai.openapi+json"}
    )
# Every operation, each its own test. (schemathesis's `parametrize` would do this too, but
# under pytest 9.2 its items all get the same node id.)
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@dataclass(frozen=True)
class Owner:
    """A signed-in browser of the end user who owns these ids."""

    cookies: dict[str, str]
    headers: dict[str, str]
    response_id: str
    item_id: str
    message_id: int


@pytest.fixture(autouse=True)
def _in_process_app(db: None, settings: Any) -> None:
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, HOST]


@pytest.fixture
def owner(whatsapp_says: Any) -> Owner:
    """The owner of a WhatsApp turn MKA1 answered, signed in with a CSRF token, so that
    unsafe requests take the real path and real ids can be retrieved."""
    message: UserMessage = whatsapp_says("What is the capital of France?")
    message.refresh_from_db()
    assert message.turn is not None
    items = client().list_conversation_items(
        message.end_user_id, message.turn.conversation.mka1_conversation_id
    )
    browser = Client()
    session = browser.session
    session["end_user_id"] = message.end_user_id
    session.save()
    browser.get("/")  # the page sets the CSRF cookie
    token = browser.cookies["csrftoken"].value
    return Owner(
        cookies={"sessionid": browser.cookies["sessionid"].value, "csrftoken": token},
        headers={"X-CSRFToken": token},
        response_id=message.turn.response_id,
        item_id=items.data["data"][0]["id"],
        message_id=message.pk,
    )


@contextmanager
def in_process_request() -> Iterator[None]:
    # As Django's test client does: the end of a request must not close the database
    # connection that holds the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    cache.clear()  # throttle counters: every example gets past the throttle to the view
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def cases(operation: APIOperation) -> st.SearchStrategy[Case]:
    """Valid requests and invalid ones (wrong types, bad JSON, odd ids and cookies)."""
    return st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_signed_out_callers_get_documented_answers(operation: APIOperation) -> None:
    @FUZZ
    @given(case=cases(operation))
    def fuzz(case: Case) -> None:
        with in_process_request():
            case.call_and_validate(checks=CHECKS)

    fuzz()


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_signed_in_callers_get_documented_answers(operation: APIOperation, owner: Owner) -> None:
    @FUZZ
    @given(case=cases(operation))
    def fuzz(case: Case) -> None:
        with in_process_request():
            case.call_and_validate(checks=CHECKS, cookies=owner.cookies, headers=owner.headers)

    fuzz()


def test_the_owners_real_ids_get_documented_answers(owner: Owner) -> None:
    # Generated ids almost never exist; these do, so the success bodies are checked too.
    requests = [
        schema["/api/multichannel/{response_id}"]["GET"].Case(
            path_parameters={"response_id": owner.response_id}
        ),
        schema["/api/conversation/items/{item_id}"]["GET"].Case(
            path_parameters={"item_id": owner.item_id}
        ),
        schema["/api/messages/{message_id}"]["GET"].Case(
            path_parameters={"message_id": owner.message_id}
        ),
        schema["/api/conversation"]["GET"].Case(),
        schema["/api/messages"]["POST"].Case(body={"text": "And of Italy?"}),
    ]
    for case in requests:
        with in_process_request():
            response = case.call_and_validate(
                checks=CHECKS, cookies=owner.cookies, headers=owner.headers
            )
        assert response.status_code in (200, 202), case.formatted_path


def test_refusals_before_the_view_are_documented(
    owner: Owner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DRF itself answers a missing CSRF token and a spent throttle; the fuzzing above
    # sends the token and resets the throttle, so these are checked here.
    monkeypatch.setattr(SendThrottle, "THROTTLE_RATES", {"send": "1/min"})
    send = schema["/api/messages"]["POST"]
    with in_process_request():
        no_token = send.Case(body={"text": "hi"}).call_and_validate(
            checks=CHECKS, cookies=owner.cookies
        )
        codes = [
            send.Case(body={"text": "hi"})
            .call_and_validate(checks=CHECKS, cookies=owner.cookies, headers=owner.headers)
            .status_code
            for _ in range(2)
        ]
    assert no_token.status_code == 403
    assert codes == [202, 429]
