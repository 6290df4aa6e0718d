from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit.checkpoints import default_key_name
from audit.notes import NoteFormatError, generate_key
from audit.toolkit import StrictCommand, non_empty


class Command(StrictCommand):
    help = (
        "Print a new Ed25519 key pair for signing checkpoints: the private signer key "
        "(for AUDIT_SIGNING_KEY) on the first line, the public verifier key (for "
        "auditors) on the second."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--name",
            type=non_empty,
            help="the key's (and the log's) name; default: AUDIT_LOG_ORIGIN, or SITE_URL's "
            "host followed by /audit",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            key = generate_key(options["name"] or default_key_name())
        except NoteFormatError as exc:
            raise CommandError(str(exc), returncode=2) from exc
        self.stdout.write(key.text)
        self.stdout.write(key.verifier.text)
        self.stderr.write(
            "The first line is the private key: put it in AUDIT_SIGNING_KEY (or in a file "
            "that AUDIT_SIGNING_KEY names) and nowhere else. The second line is the public "
            "key: give it to your auditors."
        )
