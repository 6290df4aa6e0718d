from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit.toolkit import StrictCommand, non_empty
from multichannel.management.commands.erase_end_user import operator
from multichannel.models import EndUser, LegalHold
from multichannel.privacy import PrivacyError, legal_hold_add, legal_hold_remove


class Command(StrictCommand):
    help = (
        "Place, lift or list legal holds. While a person is held, neither an erasure nor "
        "retention removes anything of theirs; both say so. Every change is audited."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        for name, verb in (("add", "place"), ("remove", "lift")):
            action = actions.add_parser(name, help=f"{verb} a hold on one end user")
            action.add_argument("end_user_id", type=non_empty)
            action.add_argument(
                "--reason", type=non_empty, required=True, help="why (a case reference)"
            )
            action.add_argument("--by", default="", help="who (default: your login name)")
        listing = actions.add_parser("list", help="the active holds (--all: ended ones too)")
        listing.add_argument("--all", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "list":
            self._list(everything=options["all"])
            return
        end_user = EndUser.objects.filter(pk=options["end_user_id"]).first()
        if end_user is None:
            raise CommandError(f"no end user {options['end_user_id']}")
        by = f"{options['by'] or operator()} (manage.py legal_hold)"
        try:
            if options["action"] == "add":
                hold = legal_hold_add(end_user=end_user, reason=options["reason"], by=by)
                self.stdout.write(f"Legal hold {hold.pk} placed on {end_user.pk}.")
            else:
                hold = legal_hold_remove(end_user=end_user, reason=options["reason"], by=by)
                self.stdout.write(f"Legal hold {hold.pk} on {end_user.pk} lifted.")
        except PrivacyError as exc:
            raise CommandError(str(exc)) from exc

    def _list(self, *, everything: bool) -> None:
        holds = LegalHold.objects.order_by("added_at", "pk")
        if not everything:
            holds = holds.filter(removed_at__isnull=True)
        count = 0
        for hold in holds:
            count += 1
            line = (
                f"{hold.pk}\t{hold.end_user_id}\tsince {hold.added_at:%Y-%m-%d %H:%M} UTC"
                f"\tby {hold.added_by}\t{hold.reason}"
            )
            if hold.removed_at:
                line += f"\tlifted {hold.removed_at:%Y-%m-%d %H:%M} UTC by {hold.removed_by}"
            self.stdout.write(line)
        if not count:
            self.stdout.write("No legal holds." if everything else "No active legal holds.")
