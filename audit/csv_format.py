"""The audit export as CSV (RFC 4180: comma, double quotes, CRLF), for spreadsheets:
one row per event, the seed guide's columns in its order, `full_response` as its JSON
text. With the integrity columns it carries what the JSONL does, but only the JSONL
export is verified by `verify_audit --file`."""

import csv
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from audit.erasure import Coverage, erased_shape
from audit.integrity import canonical_context, format_timestamp
from audit.jsonl import ERASED_KEY, INTEGRITY_FIELDS, SEED_KEYS


def csv_header(*, with_integrity: bool) -> list[str]:
    return [*SEED_KEYS, *INTEGRITY_FIELDS, ERASED_KEY] if with_integrity else list(SEED_KEYS)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def csv_row(
    values: Sequence[Any], *, with_integrity: bool, coverage: Coverage | None = None
) -> list[str]:
    """From `values_list(*seed_fields())`, or `integrity_fields()` with integrity (and
    the ledger's erasure `coverage`, to say which event erased an event's content)."""
    seed = values[: len(SEED_KEYS)]
    row = [format_timestamp(seed[0]), *map(_cell, seed[1:])]
    if with_integrity:
        sequence, fingerprint, context, digest, previous_hash, link, body_id = values[
            len(SEED_KEYS) :
        ]
        erased_by = None
        if coverage is not None and body_id is None and erased_shape(context, seed[-1]):
            erased_by = coverage.covering(sequence=sequence, end_user_id=seed[3], timestamp=row[0])
        row += [
            str(sequence),
            fingerprint,
            canonical_context(context),
            digest,
            previous_hash,
            link,
            "" if erased_by is None else str(erased_by),
        ]
    return row


def csv_write(
    handle: TextIO,
    rows: Iterable[Sequence[Any]],
    *,
    with_integrity: bool,
    coverage: Coverage | None = None,
) -> int:
    writer = csv.writer(handle, lineterminator="\r\n")
    writer.writerow(csv_header(with_integrity=with_integrity))
    count = 0
    for values in rows:
        writer.writerow(csv_row(values, with_integrity=with_integrity, coverage=coverage))
        count += 1
    return count
