"""The export filters, shared by `export_audit` and `audit_bundle`."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit.selectors import AuditFilter
from audit.toolkit import non_empty, utc_datetime


def add_filter_arguments(parser: CommandParser) -> None:
    parser.add_argument("--since", type=utc_datetime, help="events at or after (ISO 8601, UTC)")
    parser.add_argument("--until", type=utc_datetime, help="events before (ISO 8601, UTC)")
    parser.add_argument("--end-user", type=non_empty, help="only this end user id (X-On-Behalf-Of)")
    parser.add_argument("--conversation", type=non_empty, help="only this MKA1 conversation id")
    parser.add_argument("--response", type=non_empty, help="only this MKA1 response id")
    parser.add_argument("--channel", choices=["whatsapp", "webapp"])
    parser.add_argument("--action", type=non_empty, help="e.g. responses.create, responses.get")


def filter_from_options(options: dict[str, Any]) -> AuditFilter:
    since, until = options["since"], options["until"]
    if since and until and since >= until:
        raise CommandError("--since must be before --until")
    return AuditFilter(
        since=since,
        until=until,
        end_user_id=options["end_user"],
        conversation_id=options["conversation"],
        response_id=options["response"],
        channel=options["channel"],
        action=options["action"],
    )
