"""The one check a run of the real processes must pass, whatever was done to them: every
message Meta got a 200 for is stored, answered, replied to and audited exactly once, each
user's replies come in the order sent, each user's turns form one linear
previous_response_id chain over their messages in order, and `verify_audit` accepts the
ledger. Used by the fault suite (tests/test_faults.py) and by bench/pipeline.py.

It reads the app's and the sandbox's databases by URL with plain SQL, so it works from a
process whose Django (if any) points elsewhere.
"""

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from tests.support.stack import Stack, query
from tests.support.webhooks import Message


@dataclass
class Outcome:
    """What happened to the messages sent, and every way it falls short (`problems`)."""

    sent: int
    acknowledged: int
    stored: int
    answered: int
    replied: int
    audited: int
    duplicates: dict[str, int]
    mka1_conversations: int
    mka1_responses: int
    unrecorded_sends: int
    problems: list[str]


def reply_to(text: str) -> str:
    """The sandbox's answer to a text (multichannel.sandbox.mka1_views.reply_text)."""
    return f"You said: {text}"


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def exactly_once_in_order(
    stack: Stack, messages: Sequence[Message], acknowledged: Collection[str], *,
    crash: bool = False,
) -> Outcome:  # fmt: skip
    """Check `messages` (each user's in the order sent) against what the stack did;
    `acknowledged` holds the wamids Meta got a 200 for. A reply may be repeated only when
    `crash` is set and the Graph API accepted a send whose wamid the killed process never
    stored (the one at-least-once window, README)."""
    app, sandbox = stack.database_url, stack.sandbox_database_url
    wamids = {message.wamid for message in messages}
    users = {message.wa_id for message in messages}
    stored = [row[0] for row in query(app, "SELECT wamid FROM whatsapp_inboundmessage")]
    states = dict(query(app, "SELECT state, COUNT(*) FROM multichannel_usermessage GROUP BY state"))
    creates = query(
        app, "SELECT context, response_id FROM audit_auditevent WHERE action = 'responses.create'"
    )
    audited = [_json(context).get("whatsapp_message_id") for context, _ in creates]
    audited_responses = {response_id for _, response_id in creates}
    # Failed MKA1 calls are audited whether or not they were retried; a message given
    # up on (its reply an apology) shows as a failure event that says so.
    failed = query(
        app,
        "SELECT COUNT(*) FROM audit_auditevent WHERE action LIKE '%failed' "
        "AND CAST(context AS TEXT) LIKE '%\"gave_up\": true%'",
    )
    conversations_created = query(
        app, "SELECT COUNT(*) FROM audit_auditevent WHERE action = 'conversations.create'"
    )
    recorded = {row[0] for row in query(app, "SELECT wamid FROM whatsapp_outboundmessage")}
    sends = query(
        sandbox,
        "SELECT recipient, body, wamid FROM sandbox_sandboxgraphmessage WHERE kind = 'text' "
        "ORDER BY id",
    )
    replies = [(recipient, _json(body)["text"]["body"]) for recipient, body, _ in sends]
    mka1_responses = {row[0] for row in query(sandbox, "SELECT id FROM sandbox_sandboxresponse")}
    mka1_conversations = query(sandbox, "SELECT COUNT(*) FROM sandbox_sandboxconversation")

    problems = []
    if missing := wamids - set(acknowledged):
        problems.append(f"{len(missing)} never acknowledged")
    if lost := (set(acknowledged) & wamids) - set(stored):
        problems.append(f"{len(lost)} acknowledged but not stored: {sorted(lost)[:5]}")
    if unanswered := wamids - set(audited):
        problems.append(f"{len(unanswered)} stored but not answered: {sorted(unanswered)[:5]}")
    if set(states) - {"delivered"}:
        problems.append(f"message states {states}")
    if failed[0][0]:
        problems.append(f"{failed[0][0]} MKA1 failures audited (a reply said sorry)")
    expected: dict[str, list[str]] = {}
    for message in sorted(messages, key=lambda m: (m.wa_id, m.timestamp)):
        expected.setdefault(message.wa_id, []).append(reply_to(message.text))
    got: dict[str, list[str]] = {}
    for recipient, text in replies:
        if not got.get(recipient) or got[recipient][-1] != text:  # a resend repeats the last
            got.setdefault(recipient, []).append(text)
    if got != expected:
        wrong = [user for user in expected if got.get(user) != expected[user]]
        problems.append(f"replies missing or out of order for {len(wrong)} users, e.g. {wrong[:2]}")
    duplicates = {
        "stored": len(stored) - len(set(stored)),
        "answered": len(audited) - len(set(audited)),
        "replied": len(replies) - len(set(replies)),
    }
    unrecorded = sum(1 for _, _, wamid in sends if wamid not in recorded)
    if duplicates["stored"] or duplicates["answered"]:
        problems.append(f"duplicates {duplicates}")
    if duplicates["replied"] > (unrecorded if crash else 0):
        problems.append(
            f"{duplicates['replied']} duplicate replies, only {unrecorded} explained by a send "
            "the Graph API accepted just before the consumer died"
        )
    problems += _chain_problems(app, audited_responses, mka1_responses)
    if conversations_created[0][0] != len(users):
        problems.append(
            f"{conversations_created[0][0]} conversations created for {len(users)} users"
        )
    # One event per MKA1 call: each message's response, each user's conversation, each
    # voice note's transcription, and each call that failed (retried or not).
    failed_calls = query(app, "SELECT COUNT(*) FROM audit_auditevent WHERE action LIKE '%failed'")
    voices = sum(1 for message in messages if message.media is not None)
    verified, report = stack.verify_audit(
        events=len(messages) + len(users) + voices + int(failed_calls[0][0])
    )
    if not verified:
        problems.append(report)
    return Outcome(
        sent=len(messages),
        acknowledged=len(set(acknowledged) & wamids),
        stored=len(set(stored) & wamids),
        answered=states.get("delivered", 0),
        replied=len(set(replies)),
        audited=len(audited),
        duplicates=duplicates,
        mka1_conversations=int(mka1_conversations[0][0]),
        mka1_responses=len(mka1_responses),
        unrecorded_sends=unrecorded,
        problems=problems,
    )


def _chain_problems(app: str, audited: set[str], served: set[str]) -> list[str]:
    """Each user's turns: one linear previous_response_id chain, ending at the
    conversation's head, that answers the user's messages in the order sent; one turn per
    message, each audited and served by MKA1."""
    problems = []
    turns = query(
        app, "SELECT conversation_id, previous_response_id, response_id, input_text "
        "FROM multichannel_turn",
    )  # fmt: skip
    sent: dict[Any, list[str]] = {}
    unanswered = 0
    # What a message says: its text, or a voice note's transcript.
    said = (
        "SELECT m.end_user_id, COALESCE(NULLIF(m.text, ''), f.transcript, ''), m.turn_id "
        "FROM multichannel_usermessage m "
        "LEFT JOIN multichannel_media f ON f.message_id = m.id ORDER BY m.sent_at, m.id"
    )
    for end_user, text, turn in query(app, said):
        sent.setdefault(end_user, []).append(text)
        unanswered += turn is None
    if unanswered:
        problems.append(f"{unanswered} messages without a turn")
    for conversation, end_user, head in query(
        app, "SELECT id, end_user_id, previous_response_id FROM multichannel_conversation"
    ):
        mine = [(previous, response, text) for conv, previous, response, text in turns
                if conv == conversation]  # fmt: skip
        by_previous = {previous: (response, text) for previous, response, text in mine}
        if len(by_previous) != len(mine):
            problems.append(f"conversation {conversation}: the chain forks")
            continue
        walk: list[str] = []
        at: str | None = None
        while at in by_previous and len(walk) <= len(mine):
            at, text = by_previous[at]
            walk.append(text)
        if len(walk) != len(mine) or at != head:
            problems.append(f"conversation {conversation}: the chain is not one linear walk")
        elif walk != sent.get(end_user, []):
            problems.append(
                f"conversation {conversation}: turns {walk} for messages {sent.get(end_user)}"
            )
    turned = {response for _, _, response, _ in turns}
    if turned != audited:
        problems.append(
            f"{len(turned)} turns but {len(audited)} audited responses, not the same ids"
        )
    if not_served := turned - served:
        problems.append(f"{len(not_served)} turns MKA1 never served, e.g. {sorted(not_served)[:3]}")
    return problems
