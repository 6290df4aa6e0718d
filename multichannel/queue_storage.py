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


class SqliteQueue(SqliteHuey):  # type: ignore[misc]
    storage_class = SqliteNormalSyncStorage
