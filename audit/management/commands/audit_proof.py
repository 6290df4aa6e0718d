from pathlib import Path
from typing import Any, TextIO, cast

from django.core.management.base import CommandError, CommandParser

from audit.checkpoints import checkpoint_latest
from audit.models import AuditEvent
from audit.proofs import inclusion_entries, proof_write
from audit.toolkit import StrictCommand, atomic_output, non_empty
from audit.tree import TreeUnavailableError


class Command(StrictCommand):
    help = (
        "Write the events of one response or one end user with inclusion proofs against "
        "the latest signed checkpoint (JSON). `verify_audit --proof FILE --pubkey KEY` "
        "checks it offline; it shows no other person's events."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--response", type=non_empty, help="every event of this response id")
        which.add_argument("--end-user", type=non_empty, help="every event of this end user id")
        parser.add_argument(
            "--output", "-o", type=Path, help="file to write atomically (default: stdout)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        checkpoint = checkpoint_latest()
        if checkpoint is None:
            raise CommandError(
                "there is no signed checkpoint yet: run manage.py audit_checkpoint", returncode=2
            )
        if options["response"]:
            events, what = (
                AuditEvent.objects.filter(response_id=options["response"]),
                (f"response {options['response']}"),
            )
        else:
            events, what = (
                AuditEvent.objects.filter(end_user_id=options["end_user"]),
                (f"end user {options['end_user']}"),
            )
        later = events.filter(sequence__gt=checkpoint.size).count()
        if not events.filter(sequence__lte=checkpoint.size).exists():
            raise CommandError(
                f"no event of {what} in the log at the latest checkpoint "
                f"(tree size {checkpoint.size})"
            )
        output: Path | None = options["output"]
        try:
            if output is None:
                count = proof_write(
                    cast(TextIO, self.stdout._out),
                    checkpoint.note,
                    inclusion_entries(events, checkpoint),
                )
            else:
                with atomic_output(output) as handle:
                    count = proof_write(
                        handle, checkpoint.note, inclusion_entries(events, checkpoint)
                    )
        except TreeUnavailableError as exc:
            raise CommandError(f"cannot prove it: {exc}", returncode=2) from exc
        except OSError as exc:
            raise CommandError(f"cannot write {output}: {exc.strerror or exc}") from exc
        self.stderr.write(
            f"{count} events of {what} proven against the checkpoint at tree size "
            f"{checkpoint.size}" + (f" to {output}" if output else "")
        )
        if later:
            self.stderr.write(
                f"{later} later events of {what} are not covered yet: they will be after the "
                "next checkpoint (manage.py audit_checkpoint)"
            )
