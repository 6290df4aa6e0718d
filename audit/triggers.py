"""Database triggers that make the ledger append-only below the ORM: even raw SQL through
the application's connection cannot UPDATE or DELETE an event (nor, on PostgreSQL,
TRUNCATE the table) except to erase its content, nor change a stored body. The chain
head is guarded the same way: it can only move forward and cannot be deleted (a lost
head would make every writer fail, or a restarted one fork the chain). Signed
checkpoints, the stored Merkle tree and time-stamp tokens are insert-only too.

Triggers are grouped by table and installed for the tables that exist, so a migration
written before a table existed installs exactly what it did then."""

from collections.abc import Collection

from django.db.backends.base.base import BaseDatabaseWrapper

from audit.erasure import COMPLIANCE_ACTIONS

TABLE = "audit_auditevent"
HEAD = "audit_auditchainhead"
BODY = "audit_auditbody"
CHECKPOINT = "audit_auditcheckpoint"
TILE = "audit_audittreetile"
TIMESTAMP = "audit_auditcheckpointtimestamp"
MESSAGE = "audit events are append-only"
HEAD_MESSAGE = "the audit chain head only moves forward"
BODY_MESSAGE = "audit bodies cannot be changed"
# Checkpoints, the stored tree and time-stamps: insert-only, like the events.
EVIDENCE_MESSAGE = "audit checkpoints and tree hashes are append-only"
EVIDENCE = {
    CHECKPOINT: "audit_checkpoint",
    TILE: "audit_tile",
    TIMESTAMP: "audit_timestamp",
}


def _sqlite_abort(name: str, when: str, table: str, message: str, condition: str = "") -> str:
    return (
        f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {when} ON {table} {condition} "
        f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
    )


def _postgres_function(name: str, message: str, allow: str = "") -> str:
    # `allow`: a condition under which the change goes through (the head moving forward).
    permit = f"IF {allow} THEN RETURN NEW; END IF;" if allow else ""
    return (
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger AS $$ BEGIN {permit} "
        f"RAISE EXCEPTION '{message}' USING ERRCODE = 'insufficient_privilege'; END; "
        "$$ LANGUAGE plpgsql"
    )


def _postgres_trigger(
    name: str, when: str, table: str, function: str, each: str = "ROW"
) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {name} ON {table}",
        f"CREATE TRIGGER {name} BEFORE {when} ON {table} "
        f"FOR EACH {each} EXECUTE FUNCTION {function}()",
    ]


# The one change to an event the database allows: erasing its content (context to
# `{}`, body reference to null) and nothing else, and never of a compliance record
# (audit/erasure.py). Verification then requires an erasure or retention event saying
# why, so an unexplained erasure is caught as tampering.
_KEPT_COLUMNS = (
    "id",
    "sequence",
    "timestamp",
    "channel",
    "action",
    "end_user_id",
    "response_id",
    "conversation_id",
    "previous_response_id",
    "api_key_fingerprint",
    "content_digest",
    "previous_hash",
    "hash",
)
_COMPLIANCE = ", ".join(f"'{action}'" for action in sorted(COMPLIANCE_ACTIONS))
_SQLITE_ERASURE = (
    "NEW.context = '{}' AND NEW.full_response_sha256 IS NULL "
    f"AND OLD.action NOT IN ({_COMPLIANCE}) AND "
    + " AND ".join(f"NEW.{column} IS OLD.{column}" for column in _KEPT_COLUMNS)
)
_POSTGRES_ERASURE = (
    "TG_OP = 'UPDATE' AND NEW.context = '{}'::jsonb AND NEW.full_response_sha256 IS NULL "
    f"AND OLD.action NOT IN ({_COMPLIANCE}) AND "
    + " AND ".join(f"NEW.{column} IS NOT DISTINCT FROM OLD.{column}" for column in _KEPT_COLUMNS)
)

# table -> (install, uninstall) per vendor
_SQLITE: dict[str, tuple[list[str], list[str]]] = {
    TABLE: (
        [
            _sqlite_abort(
                "audit_event_no_update", "UPDATE", TABLE, MESSAGE, f"WHEN NOT ({_SQLITE_ERASURE})"
            ),
            _sqlite_abort("audit_event_no_delete", "DELETE", TABLE, MESSAGE),
        ],
        [
            "DROP TRIGGER IF EXISTS audit_event_no_update",
            "DROP TRIGGER IF EXISTS audit_event_no_delete",
        ],
    ),
    HEAD: (
        [
            _sqlite_abort("audit_head_no_delete", "DELETE", HEAD, HEAD_MESSAGE),
            _sqlite_abort(
                "audit_head_forward",
                "UPDATE",
                HEAD,
                HEAD_MESSAGE,
                "WHEN NEW.id != OLD.id OR NEW.sequence <= OLD.sequence",
            ),
        ],
        [
            "DROP TRIGGER IF EXISTS audit_head_no_delete",
            "DROP TRIGGER IF EXISTS audit_head_forward",
        ],
    ),
    BODY: (
        [_sqlite_abort("audit_body_no_update", "UPDATE", BODY, BODY_MESSAGE)],
        ["DROP TRIGGER IF EXISTS audit_body_no_update"],
    ),
    **{
        table: (
            [
                _sqlite_abort(f"{prefix}_no_update", "UPDATE", table, EVIDENCE_MESSAGE),
                _sqlite_abort(f"{prefix}_no_delete", "DELETE", table, EVIDENCE_MESSAGE),
            ],
            [
                f"DROP TRIGGER IF EXISTS {prefix}_no_update",
                f"DROP TRIGGER IF EXISTS {prefix}_no_delete",
            ],
        )
        for table, prefix in EVIDENCE.items()
    },
}
_POSTGRES: dict[str, tuple[list[str], list[str]]] = {
    TABLE: (
        [
            _postgres_function("audit_event_append_only", MESSAGE, allow=_POSTGRES_ERASURE),
            *_postgres_trigger(
                "audit_event_no_change", "UPDATE OR DELETE", TABLE, "audit_event_append_only"
            ),
            *_postgres_trigger(
                "audit_event_no_truncate", "TRUNCATE", TABLE, "audit_event_append_only", "STATEMENT"
            ),
        ],
        [
            f"DROP TRIGGER IF EXISTS audit_event_no_change ON {TABLE}",
            f"DROP TRIGGER IF EXISTS audit_event_no_truncate ON {TABLE}",
            "DROP FUNCTION IF EXISTS audit_event_append_only()",
        ],
    ),
    HEAD: (
        [
            _postgres_function(
                "audit_head_forward_only",
                HEAD_MESSAGE,
                allow="TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.sequence > OLD.sequence",
            ),
            *_postgres_trigger(
                "audit_head_forward", "UPDATE OR DELETE", HEAD, "audit_head_forward_only"
            ),
            *_postgres_trigger(
                "audit_head_no_truncate", "TRUNCATE", HEAD, "audit_head_forward_only", "STATEMENT"
            ),
        ],
        [
            f"DROP TRIGGER IF EXISTS audit_head_forward ON {HEAD}",
            f"DROP TRIGGER IF EXISTS audit_head_no_truncate ON {HEAD}",
            "DROP FUNCTION IF EXISTS audit_head_forward_only()",
        ],
    ),
    BODY: (
        [
            _postgres_function("audit_body_immutable", BODY_MESSAGE),
            *_postgres_trigger("audit_body_no_update", "UPDATE", BODY, "audit_body_immutable"),
        ],
        [
            f"DROP TRIGGER IF EXISTS audit_body_no_update ON {BODY}",
            "DROP FUNCTION IF EXISTS audit_body_immutable()",
        ],
    ),
    **{
        table: (
            [
                _postgres_function(f"{prefix}_append_only", EVIDENCE_MESSAGE),
                *_postgres_trigger(
                    f"{prefix}_no_change", "UPDATE OR DELETE", table, f"{prefix}_append_only"
                ),
                *_postgres_trigger(
                    f"{prefix}_no_truncate",
                    "TRUNCATE",
                    table,
                    f"{prefix}_append_only",
                    "STATEMENT",
                ),
            ],
            [
                f"DROP TRIGGER IF EXISTS {prefix}_no_change ON {table}",
                f"DROP TRIGGER IF EXISTS {prefix}_no_truncate ON {table}",
                f"DROP FUNCTION IF EXISTS {prefix}_append_only()",
            ],
        )
        for table, prefix in EVIDENCE.items()
    },
}


def _statements(
    connection: BaseDatabaseWrapper, install: bool, tables: Collection[str] | None
) -> list[str]:
    if connection.vendor == "sqlite":
        groups = _SQLITE
    elif connection.vendor == "postgresql":
        groups = _POSTGRES
    else:
        raise NotImplementedError(f"no append-only triggers for {connection.vendor}")
    present = set(connection.introspection.table_names())
    return [
        statement
        for table, (installs, uninstalls) in groups.items()
        if table in present and (tables is None or table in tables)
        for statement in (installs if install else uninstalls)
    ]


def triggers_install(
    connection: BaseDatabaseWrapper, tables: Collection[str] | None = None
) -> None:
    """Install the triggers of every audit table that exists (or of `tables` only)."""
    with connection.cursor() as cursor:
        for statement in _statements(connection, install=True, tables=tables):
            cursor.execute(statement)


def triggers_uninstall(
    connection: BaseDatabaseWrapper, tables: Collection[str] | None = None
) -> None:
    with connection.cursor() as cursor:
        for statement in _statements(connection, install=False, tables=tables):
            cursor.execute(statement)
