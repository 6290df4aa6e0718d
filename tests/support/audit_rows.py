"""Filling the audit table fast for export tests and benchmarks: raw multi-row INSERTs
(the ORM refuses bulk_create on purpose, and one audit_event_record per row is far too
slow for 100k+ rows). The rows carry placeholder hash-chain columns: they exercise the
export, which streams rows without verifying them; `verify_audit` rejects them."""

import hashlib
from collections.abc import Callable
from typing import Any

from django.db import connection

from audit.models import AuditBody, AuditEvent

Row = Callable[[int], dict[str, Any]]


def chain_placeholders(n: int) -> dict[str, Any]:
    """Unique values for the chain columns of row n (0-based)."""
    return {
        "sequence": n + 1,
        "content_digest": f"d{n:063x}",
        "previous_hash": f"{n - 1:064x}" if n else "0" * 64,
        "hash": f"{n:064x}",
    }


def insert_audit_rows(row: Row, first: int, stop: int, *, batch: int = 10_000) -> None:
    """Insert row(n) for n in first..stop-1. Every column of the model must be given: a new
    NOT NULL column fails here with a KeyError that names it, rather than deep inside
    the database driver. A row's `full_response` text is stored as its body (once per
    distinct text), as the recorder does."""
    columns = [f.column for f in AuditEvent._meta.concrete_fields if not f.primary_key]
    body_column = AuditEvent._meta.get_field("body").column
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    names = ", ".join(connection.ops.quote_name(column) for column in columns)
    sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(columns))})"
    with connection.cursor() as cursor:
        for start in range(first, stop, batch):
            values = [row(n) for n in range(start, min(start + batch, stop))]
            bodies: dict[str, str] = {}
            for value in values:
                text = value.pop("full_response", "null")
                digest = hashlib.sha256(text.encode()).hexdigest() if text != "null" else None
                if digest is not None:
                    bodies[digest] = text
                value[body_column] = digest
            AuditBody.objects.bulk_create(
                [AuditBody(digest=d, text=t) for d, t in bodies.items()], ignore_conflicts=True
            )
            cursor.executemany(sql, [tuple(v[c] for c in columns) for v in values])
