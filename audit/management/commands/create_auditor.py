import getpass
import os
from typing import Any

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.db import transaction

from multichannel.cli import StrictCommand, non_empty

GROUP = "Auditors"
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
        User = get_user_model()
        with transaction.atomic():
            user = User.objects.filter(username=options["username"]).first()
            created = user is None
            if user is None:
                user = User(username=options["username"], email=options["email"])
            elif user.is_superuser:
                raise CommandError(
                    f"{user.username} is a superuser; refusing to make it an auditor"
                )
            try:
                password_validation.validate_password(password, user)
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages)) from exc
            user.is_staff = True
            user.is_active = True
            if options["email"]:
                user.email = options["email"]
            user.set_password(password)
            user.save()
            group = Group.objects.filter(name=GROUP).first()
            if group is None:
                raise CommandError(f"group {GROUP} is missing; run manage.py migrate")
            user.groups.add(group)
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} auditor {user.username} (view-only, group {GROUP}).")

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
