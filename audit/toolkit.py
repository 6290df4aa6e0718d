"""Generic helpers every app uses: management commands with one-line argument errors,
typed argument parsers, atomic file output, and the read-only admin base.

A leaf: it imports Django and the standard library only, never an app of ours, so the
bottom layer (audit) and everything above it can use it (import-linter checks this)."""

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, time
from pathlib import Path
from typing import IO, Any, NoReturn, TextIO

from django.contrib import admin
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models
from django.http import HttpRequest
from django.utils.dateparse import parse_date, parse_datetime


class StrictCommand(BaseCommand):
    """A command whose bad arguments are reported in one line (no usage dump): exit
    status 2 from the shell, `CommandError` from `call_command`."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)

        def error(message: str) -> NoReturn:
            if parser.called_from_command_line:
                sys.stderr.write(f"{parser.prog}: error: {message}\n")
                sys.exit(2)
            raise CommandError(message)

        parser.error = error  # type: ignore[method-assign]
        return parser


def utc_datetime(value: str) -> datetime:
    """argparse type: an ISO 8601 date or date-time; naive values are taken as UTC."""
    problem = f"{value!r} is not an ISO 8601 date or date-time (e.g. 2026-03-30T19:10:14Z)"
    try:
        moment = parse_datetime(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        day = parse_date(value) if moment is None else None
    except ValueError as exc:
        # Well-formed but impossible ("2026-02-30"): argparse would otherwise say only
        # "invalid utc_datetime value".
        raise argparse.ArgumentTypeError(f"{problem}: {exc}") from exc
    if moment is None:
        if day is None:
            raise argparse.ArgumentTypeError(problem)
        moment = datetime.combine(day, time.min)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def non_empty(value: str) -> str:
    """argparse type: a string that must not be empty, for filters where an empty value
    (an unset shell variable) would otherwise silently mean "no filter at all"."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


@contextmanager
def atomic_output(path: Path, *, encoding: str = "utf-8") -> Iterator[TextIO]:
    """Write to a temporary file beside `path` and rename it into place on success,
    so a failed or interrupted write never leaves a half file at `path`."""
    directory = path.resolve().parent
    if not directory.is_dir():
        raise CommandError(f"output directory {directory} does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_binary_output(path: Path) -> Iterator[IO[bytes]]:
    """atomic_output for bytes (a zip, say)."""
    directory = path.resolve().parent
    if not directory.is_dir():
        raise CommandError(f"output directory {directory} does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w+b") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Browsable, never editable: the admin is for auditors, not for changing records."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def db_names(model: Any, *fields: str) -> list[str]:
    """`model`'s table and the columns of `fields`, for a hand-written statement."""
    meta = model._meta
    return [meta.db_table, *(meta.get_field(name).column for name in fields)]


def db_datetime(value: datetime) -> Any:
    """A date-time as a hand-written statement's parameter, as the ORM passes one
    (on SQLite: UTC text in Django's format, so it compares with the stored values)."""
    from django.db import connection

    return connection.ops.adapt_datetimefield_value(value)


def one_row(sql: str, params: list[Any]) -> tuple[Any, ...] | None:
    """The first row of a hand-written SELECT on the default database, or None."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row: tuple[Any, ...] | None = cursor.fetchone()
    return row


def first_column(sql: str, params: list[Any]) -> list[Any]:
    """The first column of every row of a hand-written SELECT on the default database."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def rows_changed(sql: str, params: list[Any]) -> int:
    """Run a hand-written UPDATE (or DELETE) on the default database: how many rows."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        count: int = cursor.rowcount
    return count


# (model, fields, database vendor) -> the fields and their UPDATE statement; likewise
# for upsert_row's statements.
_UPDATES: dict[tuple[Any, ...], tuple[list[Any], str]] = {}


def update_row(instance: models.Model, fields: list[str]) -> None:
    """`instance.save(update_fields=fields)` as one plain UPDATE by primary key (each
    value prepared by its field, auto_now applied), built once per model, fields and
    database: for hot paths, where the ORM's save cost more CPU than the statement. No
    model signals are sent (tests/test_webhook_queries.py checks the models written this
    way have no receivers); a row that is gone raises as save() does."""
    from django.db import DatabaseError, connection

    model = type(instance)
    key = (model, tuple(fields), connection.vendor)
    found = _UPDATES.get(key)
    if found is None:
        quote = connection.ops.quote_name
        meta = model._meta
        by_name = {field.name: field for field in meta.concrete_fields}
        chosen = [by_name[name] for name in fields]
        assignments = ", ".join(f"{quote(field.column)} = %s" for field in chosen)
        table, primary_key = quote(meta.db_table), quote(meta.pk.column)
        sql = f"UPDATE {table} SET {assignments} WHERE {primary_key} = %s"  # noqa: S608
        found = _UPDATES[key] = (chosen, sql)
    chosen, sql = found
    values = [
        field.get_db_prep_save(field.pre_save(instance, False), connection) for field in chosen
    ]
    if not rows_changed(sql, [*values, instance.pk]):
        raise DatabaseError("Save with update_fields did not affect any rows.")


def insert_columns(
    model: type[models.Model], quote: Callable[[str], str]
) -> tuple[list["models.Field[Any, Any]"], str]:
    """The fields a hand-written INSERT of `model` sets (every concrete one but the
    primary key) and their column names, quoted and joined: for the few hot paths that
    send their own statement (values from `insert_values`)."""
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    return fields, ", ".join(quote(field.column) for field in fields)


def insert_values(
    instance: models.Model, fields: list["models.Field[Any, Any]"], connection: Any
) -> list[Any]:
    """`instance`'s values for `fields`, each prepared by its field as `save()` would
    for a new row (defaults and auto_now applied)."""
    return [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]


# (model, database vendor) -> its fields and INSERT statement; built once each.
_INSERTS: dict[tuple[type[models.Model], str], tuple[list["models.Field[Any, Any]"], str]] = {}


def insert_statement(
    model: type[models.Model], connection: Any
) -> tuple[list["models.Field[Any, Any]"], str]:
    """The fields a hand-written INSERT of `model` sets and the statement itself (with
    `RETURNING` the primary key where the database has it), built once per model and
    database vendor: the hot paths that send it run it for every webhook or event."""
    key = (model, connection.vendor)
    found = _INSERTS.get(key)
    if found is None:
        quote = connection.ops.quote_name
        fields, columns = insert_columns(model, quote)
        placeholders = ", ".join(["%s"] * len(fields))
        sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608
        if connection.features.can_return_columns_from_insert:
            sql += f" RETURNING {quote(model._meta.pk.column)}"
        found = _INSERTS[key] = (fields, sql)
    return found


def upsert_row(instance: models.Model, *, by: tuple[str, ...], fields: list[str]) -> None:
    """INSERT `instance` (as insert_row), or where a row with the same `by` fields (a
    unique constraint) exists, UPDATE its `fields` to `instance`'s values instead: one
    statement (INSERT ... ON CONFLICT, PostgreSQL and SQLite), built once per model,
    key and fields. The primary key is not read back. No model signals are sent."""
    from django.db import connection

    model = type(instance)
    key = (model, by, tuple(fields), connection.vendor, "upsert")
    found = _UPDATES.get(key)
    if found is None:
        quote = connection.ops.quote_name
        meta = model._meta
        inserted, columns = insert_columns(model, quote)
        by_name = {field.name: field for field in meta.concrete_fields}
        conflict = ", ".join(quote(by_name[name].column) for name in by)
        updates = ", ".join(
            f"{quote(by_name[name].column)} = EXCLUDED.{quote(by_name[name].column)}"
            for name in fields
        )
        placeholders = ", ".join(["%s"] * len(inserted))
        sql = (
            f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders}) "  # noqa: S608
            f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        )
        found = _UPDATES[key] = (inserted, sql)
    inserted, sql = found
    rows_changed(sql, insert_values(instance, inserted, connection))


def insert_row(instance: models.Model) -> None:
    """INSERT a new `instance` on the default database as `save()` would (each value
    prepared by its field, defaults and auto_now applied) in one statement, setting its
    primary key: for hot paths, where the ORM's insert machinery cost more CPU than the
    statement it sends (docs/benchmarks.md). No model signals are sent: only models with
    no receivers are inserted this way (tests/test_webhook_queries.py checks). A database
    without INSERT ... RETURNING gets `save()`."""
    from django.db import connection

    if not connection.features.can_return_columns_from_insert:
        instance.save()
        return
    fields, sql = insert_statement(type(instance), connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, insert_values(instance, fields, connection))
        instance.pk = cursor.fetchone()[0]
    instance._state.adding = False
    instance._state.db = connection.alias


class Columns:
    """`model`'s concrete columns for a hand-written SELECT, as `alias.column, …`, and
    the instance built from a row of them, each value converted as the ORM converts it
    (aware datetimes on SQLite, JSON decoded): for the hot paths' reads, where building
    the query with the ORM cost several times the statement (docs/benchmarks.md)."""

    def __init__(self, model: type[models.Model], alias: str, connection: Any) -> None:
        fields = list(model._meta.concrete_fields)
        quote = connection.ops.quote_name
        self.model = model
        self.width = len(fields)
        self.sql = ", ".join(f"{alias}.{quote(field.column)}" for field in fields)
        self._attnames = [field.attname for field in fields]
        self._converters = []
        for position, field in enumerate(fields):
            column = field.get_col(alias)
            found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
            if found:
                self._converters.append((position, found, column))
        self._alias = connection.alias

    def instance(self, row: tuple[Any, ...], connection: Any, start: int = 0) -> Any:
        """The instance in `row[start:start + width]`, as loaded from the database."""
        values = list(row[start : start + self.width])
        for position, converters, column in self._converters:
            value = values[position]
            for converter in converters:
                value = converter(value, column, connection)
            values[position] = value
        return self.model.from_db(self._alias, self._attnames, values)


# (model, alias, database vendor) -> its Columns; built once each.
_COLUMNS: dict[tuple[type[models.Model], str, str], Columns] = {}


def columns(model: type[models.Model], alias: str, connection: Any) -> Columns:
    """`Columns` of `model` under the table alias `alias`, built once per database vendor."""
    key = (model, alias, connection.vendor)
    found = _COLUMNS.get(key)
    if found is None:
        found = _COLUMNS[key] = Columns(model, alias, connection)
    return found
