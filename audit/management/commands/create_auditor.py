import getpass
import os
from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit.accounts import GROUP, AuditorError, auditor_save
from audit.toolkit import StrictCommand, non_empty

PASSWORD_VARIABLE = "AUDITOR_PASSWORD"  # noqa: S105 (a variable's name, not a password)


class Command(StrictCommand):
    help = (
        "Create or update a staff user in the view-only Auditors group. The password comes "
        f"from a prompt, or from ${PASSWORD_VARIABLE} with --no-input; never an argument."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", type=non_empty)
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--no-input",
            action="store_false",
            dest="interactive",
            help=f"take the password from ${PASSWORD_VARIABLE} instead of prompting",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        password = self._password(options["interactive"])
        try:
            user, created = auditor_save(
                username=options["username"], password=password, email=options["email"]
            )
        except AuditorError as exc:
            raise CommandError(str(exc)) from exc
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} auditor {user.get_username()} (view-only, group {GROUP}).")

    def _password(self, interactive: bool) -> str:
        if not interactive:
            password = os.environ.get(PASSWORD_VARIABLE, "")
            if not password:
                raise CommandError(f"--no-input needs the password in ${PASSWORD_VARIABLE}")
            return password
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Password (again): "):
            raise CommandError("the passwords do not match")
        if not password:
            raise CommandError("the password is empty")
        return password
