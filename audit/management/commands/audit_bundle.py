from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit.bundle import BundleError, bundle_write
from audit.checkpoints import SigningKeyError
from audit.management.filters import add_filter_arguments, filter_from_options
from audit.selectors import audit_events_filter
from audit.toolkit import StrictCommand, atomic_binary_output
from audit.tree import TreeUnavailableError


class Command(StrictCommand):
    help = (
        "Write an evidence bundle (zip): the export with integrity fields, every signed "
        "checkpoint up to the latest (with time-stamp tokens), consistency proofs, "
        "inclusion proofs for a filtered export, the public key, a MANIFEST, a standalone "
        "verify.py and a README. The auditor runs `python verify.py` with only "
        "`cryptography` installed. Events after the latest checkpoint are left out."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", "-o", type=Path, required=True, help="the zip to write")
        add_filter_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        events = audit_events_filter(filter_from_options(options))
        output: Path = options["output"]
        try:
            with atomic_binary_output(output) as handle:
                summary = bundle_write(handle, events)
        except (BundleError, SigningKeyError, TreeUnavailableError) as exc:
            raise CommandError(str(exc), returncode=2) from exc
        except OSError as exc:
            raise CommandError(f"cannot write {output}: {exc.strerror or exc}") from exc
        what = "all" if summary.complete else "a selection of"
        self.stderr.write(
            f"wrote {output}: {what} {summary.events} events, {summary.checkpoints} "
            f"checkpoints up to tree size {summary.tree_size}"
        )
