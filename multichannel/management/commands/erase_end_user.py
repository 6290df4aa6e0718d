import getpass
import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit.toolkit import StrictCommand, non_empty
from multichannel.models import EndUser, Erasure
from multichannel.privacy import (
    ErasureBusyError,
    ErasureStoppedError,
    PrivacyError,
    end_users_by_address,
    erasure_request,
    erasure_run,
    erasure_scope,
)

# How long to wait for a turn of theirs in flight before giving up (run again later).
LEASE_WAIT_SECONDS = 60.0


def operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Command(StrictCommand):
    help = (
        "Erase one person's data: at MKA1 (stored responses, conversation items and the "
        "conversation, uploaded files, transcriptions), in our database (messages, replies, "
        "transcripts, media, sign-ins; their WhatsApp number becomes a keyed hash) and the "
        "content of their audit events (rows, digests and hashes stay; the ledger still "
        "verifies). Resumable: run it again after a failure and it continues. Refused under "
        "a legal hold."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "who",
            type=non_empty,
            help="the end user id (user_...), or their WhatsApp number (+15551234567)",
        )
        parser.add_argument(
            "--reason", type=non_empty, help="why (a case or ticket number; no personal data)"
        )
        parser.add_argument("--by", default="", help="who asks (default: your login name)")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.add_argument(
            "--status", action="store_true", help="only show the erasure's state; change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        end_user = self._end_user(options["who"])
        if end_user is None:
            return
        erasure = Erasure.objects.filter(end_user=end_user).order_by("-pk").first()
        if options["status"]:
            self._report(end_user, erasure)
            return
        if erasure is not None and erasure.finished:
            self._report(end_user, erasure)
            return
        if erasure is None:
            if not options["reason"]:
                raise CommandError("--reason is required: why this person's data is erased")
            self._confirm(end_user, options)
            try:
                erasure = erasure_request(
                    end_user=end_user,
                    reason=options["reason"],
                    requested_by=f"{options['by'] or operator()} (manage.py erase_end_user)",
                )
            except PrivacyError as exc:
                raise CommandError(str(exc)) from exc
        else:
            self.stdout.write(
                f"Resuming erasure {erasure.pk} of {end_user.pk} at "
                f"{erasure.get_step_display().lower()}."
            )
        try:
            erasure_run(erasure, lease_wait=LEASE_WAIT_SECONDS)
        except (ErasureStoppedError, ErasureBusyError) as exc:
            raise CommandError(f"{exc}. Run the command again to continue.") from exc
        except PrivacyError as exc:
            raise CommandError(str(exc)) from exc
        self._report(end_user, erasure)

    def _end_user(self, who: str) -> EndUser | None:
        if who.startswith("user_"):
            end_user = EndUser.objects.filter(pk=who).first()
            if end_user is None:
                raise CommandError(f"no end user {who}")
            return end_user
        live, erased = end_users_by_address(who)
        if live:
            return live
        if erased:
            for end_user in erased:
                self._report(end_user, end_user.erasures.order_by("-pk").first())
            return None
        raise CommandError(f"no end user is known by {who!r} (nor was one erased)")

    def _confirm(self, end_user: EndUser, options: dict[str, Any]) -> None:
        scope = erasure_scope(end_user)
        self.stdout.write(
            f"About to erase {end_user.pk}: "
            + ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in scope.items())
            + "."
        )
        if options["yes"]:
            return
        if not sys.stdin.isatty():
            raise CommandError("add --yes to erase without a prompt")
        answer = input(f"Type {end_user.pk} to erase it for good: ")
        if answer.strip() != end_user.pk:
            raise CommandError("not confirmed; nothing was erased")

    def _report(self, end_user: EndUser, erasure: Erasure | None) -> None:
        if erasure is None:
            self.stdout.write(f"{end_user.pk}: no erasure asked for.")
            return
        state = (
            f"finished {erasure.finished_at:%Y-%m-%d %H:%M:%S} UTC"
            if erasure.finished_at
            else f"at {erasure.get_step_display().lower()}"
            + (f" (last error: {erasure.error})" if erasure.error else "")
        )
        self.stdout.write(f"Erasure {erasure.pk} of {end_user.pk}: {state}.")
        if erasure.finished:
            removed = erasure.removed
            self.stdout.write(
                f"  at MKA1: {len(removed.get('responses', []))} responses, "
                f"{removed.get('mka1_items', 0)} conversation items, "
                f"{len(removed.get('conversations', []))} conversations, "
                f"{len(removed.get('files', []))} files, "
                f"{len(removed.get('transcriptions', []))} transcriptions\n"
                f"  here: "
                + ", ".join(
                    f"{count} {name.replace('_', ' ')}"
                    for name, count in sorted(removed.get("database", {}).items())
                    if count
                )
                + f"\n  ledger: the content of {removed.get('ledger_events', 0)} events; "
                f"recorded as event {erasure.audit_sequence}"
            )
