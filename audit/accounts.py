"""Auditor accounts: staff users in the view-only Auditors group."""

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction

GROUP = "Auditors"


class AuditorError(Exception):
    pass


def auditor_save(*, username: str, password: str, email: str = "") -> tuple[AbstractBaseUser, bool]:
    """Create or update an auditor; returns (user, created). Raises AuditorError for a
    superuser, a missing group, or a password the validators reject."""
    User = get_user_model()
    with transaction.atomic():
        user = User.objects.filter(username=username).first()
        created = user is None
        if user is None:
            user = User(username=username, email=email)
        elif getattr(user, "is_superuser", False):
            raise AuditorError(f"{username} is a superuser; refusing to make it an auditor")
        try:
            password_validation.validate_password(password, user)
        except ValidationError as exc:
            raise AuditorError("; ".join(exc.messages)) from exc
        group = Group.objects.filter(name=GROUP).first()
        if group is None:
            raise AuditorError(f"group {GROUP} is missing; run manage.py migrate")
        user.is_staff = True
        user.is_active = True
        if email:
            user.email = email
        user.set_password(password)
        user.save()
        user.groups.add(group)
    return user, created
