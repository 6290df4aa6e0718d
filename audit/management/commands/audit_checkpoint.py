from typing import Any

from django.core.management.base import CommandError

from audit.checkpoints import (
    CheckpointError,
    CheckpointNotConfiguredError,
    SigningKeyError,
    checkpoint_create,
)
from audit.publishing import publications_deliver
from audit.toolkit import StrictCommand


class Command(StrictCommand):
    help = (
        "Sign and store a checkpoint of the ledger as it is now (c2sp.org/tlog-checkpoint), "
        "publish it (AUDIT_CHECKPOINT_DIR, AUDIT_WITNESS_URLS, AUDIT_TSA_URL) and print it. "
        "With no new event since the latest checkpoint, that one is printed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            checkpoint, created = checkpoint_create()
        except (CheckpointNotConfiguredError, SigningKeyError) as exc:
            raise CommandError(str(exc), returncode=2) from exc
        except CheckpointError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(checkpoint.note, ending="")
        what = "signed" if created else "unchanged (no new events)"
        self.stderr.write(f"checkpoint at tree size {checkpoint.size} {what}")
        for publication, outcome in publications_deliver():
            self.stderr.write(
                f"published checkpoint {publication.checkpoint_size} to {publication.target}: "
                f"{outcome if outcome == 'ok' else 'FAILED, will retry: ' + outcome}"
            )
