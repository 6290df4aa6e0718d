from audit.accounts import GroupMemberCommand
from multichannel.privacy import DATA_PROTECTION_GROUP

PASSWORD_VARIABLE = "DPO_PASSWORD"  # noqa: S105 (a variable's name, not a password)


class Command(GroupMemberCommand):
    help = (
        f"Create or update a staff user in the {DATA_PROTECTION_GROUP} group: erases people's "
        "data and places and lifts legal holds in the admin. The password comes from a "
        f"prompt, or from ${PASSWORD_VARIABLE} with --no-input; never an argument."
    )
    group = DATA_PROTECTION_GROUP
    role = "a data protection officer"
    title = "data protection officer"
    summary = f"group {DATA_PROTECTION_GROUP}: erasure and legal holds"
    password_variable = PASSWORD_VARIABLE
