"""CPU per call of the single-row reads and inserts on the hot paths, built by the ORM
against the same statement sent through the cursor (what the product now sends), plus
a Redis GET for scale: why those paths send plain statements.

    .venv/bin/python bench/query_cost.py --db postgres
    .venv/bin/python bench/query_cost.py --db sqlite

Results and method: docs/benchmarks.md.
"""

import argparse
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchkit  # noqa: E402

from tests.support.stack import postgres_database  # noqa: E402

CHILD = """
import sys, time
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.sessions.backends.db import SessionStore
from django.core.cache import cache
from django.db import connection
from audit.toolkit import insert_row, insert_statement, insert_values
from multichannel.models import Conversation, EndUser, Turn
from multichannel.selectors import conversation_of_response, end_user_active
from whatsapp.models import WebhookDelivery

calls = int(sys.argv[1])
session = SessionStore()
session["end_user_id"] = "x"
session.create()
user = EndUser.objects.create()
conversation = Conversation.objects.create(end_user=user, mka1_conversation_id="conv_" + user.pk)
turn = Turn.objects.create(
    response_id="resp_" + user.pk, end_user=user, conversation=conversation, channel="web",
    input_text="q" * 200, output_text="a" * 2000,
)
body = '{"object": "whatsapp_business_account", "entry": []}' + " " * 1500
fields, sql = insert_statement(WebhookDelivery, connection)


def delivery():
    return WebhookDelivery(object="whatsapp_business_account", raw_body=body)


def precomputed_insert():
    row = delivery()
    with connection.cursor() as cursor:
        cursor.execute(sql, insert_values(row, fields, connection))


cases = {
    "session, Django's db engine": lambda: SessionStore(session.session_key).load(),
    "end user, ORM .filter().first()": (
        lambda: EndUser.objects.filter(pk=user.pk, erased_at__isnull=True).first()
    ),
    "end user, plain (end_user_active)": lambda: end_user_active(user.pk),
    "turn + conversation, ORM select_related": lambda: (
        Turn.objects.select_related("conversation").filter(
            response_id=turn.response_id, end_user=user).first()
    ),
    "conversation id, plain (conversation_of_response)": (
        lambda: conversation_of_response(end_user=user, response_id=turn.response_id)
    ),
    "webhook delivery, Model.save": lambda: delivery().save(),
    "webhook delivery, insert_row": lambda: insert_row(delivery()),
    "webhook delivery, the same INSERT sent directly": precomputed_insert,
    "cache GET": lambda: cache.get("absent"),
}
for name, call in cases.items():
    for _ in range(200):
        call()
    started = time.process_time()
    for _ in range(calls):
        call()
    print(f"| {name} | {(time.process_time() - started) / calls * 1e6:,.0f} |")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per case")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12", help="cache (postgres)")
    args = parser.parse_args()
    print(benchkit.machine_facts())
    with ExitStack() as cleanup:
        scratch = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-q-")))
        postgres = args.db == "postgres"
        database_url = (
            cleanup.enter_context(postgres_database("bench_query"))
            if postgres
            else f"sqlite:///{scratch / 'db.sqlite3'}"
        )
        env = benchkit.django_env(database_url, scratch, redis_url=args.redis if postgres else "")
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.calls)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False,
        )  # fmt: skip
        if done.returncode:
            raise SystemExit(f"the timing failed:\n{done.stderr[-2000:]}")
    print()
    print(f"| {args.db}: one call | µs of CPU |")
    print("|---|---:|")
    print(done.stdout, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
