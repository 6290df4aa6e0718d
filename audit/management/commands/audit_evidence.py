import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit.evidence import CONDITIONS, LABELS, Pair, cross_channel_pairs, pair_json, timeline
from audit.integrity import format_timestamp
from audit.toolkit import StrictCommand, non_empty


class Command(StrictCommand):
    help = (
        "For each response created on one channel and retrieved on the other, check the "
        "seed guide's four conditions (same API key, end user id, response id, "
        "conversation id) and show a timeline per end user. Exits 1 if any pair fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--response-id", type=non_empty, help="only this response")
        parser.add_argument("--format", choices=["text", "json"], default="text")

    def handle(self, *args: Any, **options: Any) -> None:
        pairs = list(cross_channel_pairs(response_id=options["response_id"]))
        users = {pair.created.end_user_id for pair in pairs} | {
            pair.retrieved.end_user_id for pair in pairs
        }
        events_by_user = timeline(users)
        failed = sum(not pair.passed for pair in pairs)
        if options["format"] == "json":
            self.stdout.write(
                json.dumps(
                    {
                        "pairs": [pair_json(pair) for pair in pairs],
                        "summary": {
                            "checked": len(pairs),
                            "passed": len(pairs) - failed,
                            "failed": failed,
                        },
                        "timeline": events_by_user,
                    },
                    indent=2,
                )
            )
        else:
            for pair in pairs:
                self._write_pair(pair)
            for user, events in events_by_user.items():
                self.stdout.write(f"Timeline of {user}")
                for event in events:
                    self.stdout.write(
                        f"  #{event['sequence']:<6} {event['timestamp']}  "
                        f"{event['channel']:<8} {event['action']:<24} {event['response_id'] or ''}"
                    )
            self.stdout.write(
                f"Summary: {len(pairs)} pair(s) checked, {len(pairs) - failed} passed, "
                f"{failed} failed"
            )
        if not pairs:
            which = f" for {options['response_id']}" if options["response_id"] else ""
            raise CommandError(
                f"no response created on one channel and retrieved on the other{which}"
            )
        if failed:
            raise CommandError(f"{failed} of {len(pairs)} pair(s) failed")

    def _write_pair(self, pair: Pair) -> None:
        created, retrieved = pair.created, pair.retrieved
        self.stdout.write(f"Response {created.response_id}: {'PASS' if pair.passed else 'FAIL'}")
        for label, event in (("created  ", created), ("retrieved", retrieved)):
            self.stdout.write(
                f"  {label} #{event.sequence} {format_timestamp(event.timestamp)} "
                f"{event.channel:<8} {event.action:<16} end user {event.end_user_id} "
                f"conversation {event.conversation_id} key {event.api_key_fingerprint}"
            )
        for name in CONDITIONS:
            self.stdout.write(f"  {'PASS' if pair.checks[name] else 'FAIL'}  {LABELS[name]}")
