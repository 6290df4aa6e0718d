"""The embedded queue (Huey on SQLite) with the same durability as the embedded
database: write-ahead log with `synchronous=NORMAL`, so a commit (an enqueue, once per
webhook) does not wait for the disk. Huey's default (`FULL`) syncs the log on every
commit and holds the queue's single write lock while it does, which serialised every
web thread's enqueue behind the disk. A power cut may lose the last tasks queued, never
the database's integrity; the queue is not the record anyway: recovery queues again
what the database says is unfinished (multichannel.tasks)."""

import sqlite3

from huey import SqliteHuey
from huey.storage import SqliteStorage


class SqliteNormalSyncStorage(SqliteStorage):  # type: ignore[misc]
    def _create_connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection = super()._create_connection()
        connection.execute("pragma synchronous=NORMAL")
        return connection

    def enqueue(self, data: bytes, priority: float | None = None) -> None:
        # One INSERT in autocommit, its own transaction, instead of Huey's BEGIN
        # EXCLUSIVE, INSERT, COMMIT: the queue's write lock is held for the statement
        # alone, not across three calls while the process's other threads run.
        self.sql(
            "insert into task (queue, data, priority) values (?, ?, ?)",
            (self.name, self.to_blob(data), priority or 0),
        )


class SqliteQueue(SqliteHuey):  # type: ignore[misc]
    storage_class = SqliteNormalSyncStorage
