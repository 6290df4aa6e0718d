"""Staff accounts in one group: auditors (view-only), and the groups other apps add
(Data protection). `manage.py create_auditor` and its kind create or update them."""

import getpass
import os
from typing import Any

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.db import transaction

from audit.toolkit import StrictCommand, non_empty

GROUP = "Auditors"


class AccountError(Exception):
    pass


# Its first name, kept for callers that know it.
AuditorError = AccountError


def group_member_save(
    *, username: str, password: str, group: str, role: str, email: str = ""
) -> tuple[AbstractBaseUser, bool]:
    """Create or update a staff user in `group`; returns (user, created). Raises
    AccountError for a superuser, a missing group, or a password the validators
    reject."""
    User = get_user_model()
    with transaction.atomic():
        user = User.objects.filter(username=username).first()
        created = user is None
        if user is None:
            user = User(username=username, email=email)
        elif getattr(user, "is_superuser", False):
            raise AccountError(f"{username} is a superuser; refusing to make it {role}")
        try:
            password_validation.validate_password(password, user)
        except ValidationError as exc:
            raise AccountError("; ".join(exc.messages)) from exc
        members = Group.objects.filter(name=group).first()
        if members is None:
            raise AccountError(f"group {group} is missing; run manage.py migrate")
        user.is_staff = True
        user.is_active = True
        if email:
            user.email = email
        user.set_password(password)
        user.save()
        user.groups.add(members)
    return user, created


def auditor_save(*, username: str, password: str, email: str = "") -> tuple[AbstractBaseUser, bool]:
    """Create or update an auditor (view-only, group Auditors)."""
    return group_member_save(
        username=username, password=password, email=email, group=GROUP, role="an auditor"
    )


class GroupMemberCommand(StrictCommand):
    """Create or update a staff user in one group. The password comes from a prompt,
    or from an environment variable with --no-input; never an argument."""

    group: str
    role: str  # "an auditor"
    title: str  # "auditor"
    password_variable: str

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", type=non_empty)
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--no-input",
            action="store_false",
            dest="interactive",
            help=f"take the password from ${self.password_variable} instead of prompting",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        password = self._password(options["interactive"])
        try:
            user, created = group_member_save(
                username=options["username"],
                password=password,
                email=options["email"],
                group=self.group,
                role=self.role,
            )
        except AccountError as exc:
            raise CommandError(str(exc)) from exc
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} {self.title} {user.get_username()} ({self.summary}).")

    summary = ""

    def _password(self, interactive: bool) -> str:
        if not interactive:
            password = os.environ.get(self.password_variable, "")
            if not password:
                raise CommandError(f"--no-input needs the password in ${self.password_variable}")
            return password
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Password (again): "):
            raise CommandError("the passwords do not match")
        if not password:
            raise CommandError("the password is empty")
        return password
