from audit.accounts import GROUP, GroupMemberCommand

PASSWORD_VARIABLE = "AUDITOR_PASSWORD"  # noqa: S105 (a variable's name, not a password)


class Command(GroupMemberCommand):
    help = (
        "Create or update a staff user in the view-only Auditors group. The password comes "
        f"from a prompt, or from ${PASSWORD_VARIABLE} with --no-input; never an argument."
    )
    group = GROUP
    role = "an auditor"
    title = "auditor"
    summary = f"view-only, group {GROUP}"
    password_variable = PASSWORD_VARIABLE
