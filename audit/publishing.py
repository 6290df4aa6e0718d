"""Copies of every checkpoint outside the database, where whoever runs the database
cannot recall them: an RFC 3161 time-stamp (AUDIT_TSA_URL), a file in
AUDIT_CHECKPOINT_DIR, a POST to each of AUDIT_WITNESS_URLS.

Each (checkpoint, target) is a row in AuditPublication, pending until it succeeds. The
periodic task retries pending rows every minute, oldest first; a target whose oldest
pending row fails is not tried further in that round. A witness may get the same
checkpoint twice (two consumers ticking at once): the text is the same, so it is an
idempotent repeat."""

import logging
import os
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db.models import Min
from django.utils import timezone

from audit.models import AuditCheckpoint, AuditCheckpointTimestamp, AuditPublication
from audit.selectors import chain_head_size
from audit.timestamps import TimestampError, timestamp_fetch

logger = logging.getLogger(__name__)

Publisher = Callable[[AuditCheckpoint], None]


class PublishError(Exception):
    pass


def redacted_url(url: str) -> str:
    """The URL without credentials or query, as it may be stored and shown."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def checkpoint_file(directory: Path, size: int, suffix: str) -> Path:
    # Zero-padded: a directory listing is in tree order.
    return directory / f"checkpoint-{size:012d}{suffix}"


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _to_directory(directory: Path) -> Publisher:
    def publish(checkpoint: AuditCheckpoint) -> None:
        try:
            _write_atomically(checkpoint_file(directory, checkpoint.size, ".txt"),
                              checkpoint.note.encode())  # fmt: skip
            stamp = AuditCheckpointTimestamp.objects.filter(checkpoint_size=checkpoint.size)
            token = stamp.values_list("token", flat=True).first()
            if token is not None:
                _write_atomically(checkpoint_file(directory, checkpoint.size, ".tsr"),
                                  bytes(token))  # fmt: skip
        except OSError as exc:
            raise PublishError(f"cannot write to {directory}: {exc.strerror or exc}") from None

    return publish


def _to_witness(url: str) -> Publisher:
    def publish(checkpoint: AuditCheckpoint) -> None:
        try:
            answer = requests.post(
                url,
                data=checkpoint.note.encode(),
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=(5, settings.AUDIT_PUBLISH_TIMEOUT),
            )
        except requests.RequestException as exc:
            # The exception's text may carry the URL (and a token in it): the type only.
            raise PublishError(f"unreachable ({type(exc).__name__})") from None
        if not 200 <= answer.status_code < 300:
            raise PublishError(f"answered HTTP {answer.status_code}")

    return publish


def _to_tsa(url: str, directory: Path | None) -> Publisher:
    def publish(checkpoint: AuditCheckpoint) -> None:
        stored = AuditCheckpointTimestamp.objects.filter(checkpoint_size=checkpoint.size)
        token = stored.values_list("token", flat=True).first()
        if token is None:
            try:
                token = timestamp_fetch(checkpoint.note.encode(), url=url)
            except TimestampError as exc:
                raise PublishError(str(exc)[:250]) from None
            AuditCheckpointTimestamp.objects.get_or_create(
                checkpoint_size=checkpoint.size,
                defaults={"token": token, "tsa_url": redacted_url(url)},
            )
        if directory is not None:  # the checkpoint file may have been written already
            try:
                _write_atomically(checkpoint_file(directory, checkpoint.size, ".tsr"),
                                  bytes(token))  # fmt: skip
            except OSError as exc:
                raise PublishError(f"cannot write to {directory}: {exc.strerror or exc}") from None

    return publish


def publishers() -> dict[str, Publisher]:
    """Each configured target's name (as stored, no secrets) and how to publish to it,
    in the order they are tried: the time-stamp first, so the directory gets it too."""
    directory = Path(settings.AUDIT_CHECKPOINT_DIR) if settings.AUDIT_CHECKPOINT_DIR else None
    targets: dict[str, Publisher] = {}
    if settings.AUDIT_TSA_URL:
        targets[f"tsa:{redacted_url(settings.AUDIT_TSA_URL)}"] = _to_tsa(
            settings.AUDIT_TSA_URL, directory
        )
    if directory is not None:
        targets[f"dir:{directory}"] = _to_directory(directory)
    for url in settings.AUDIT_WITNESS_URLS:
        targets[f"witness:{redacted_url(url)}"] = _to_witness(url)
    return targets


def publication_targets() -> list[str]:
    return list(publishers())


def publications_deliver(now: datetime | None = None) -> list[tuple[AuditPublication, str]]:
    """Try every pending publication to a configured target; (publication, "ok" or the
    reason it failed) for each one tried."""
    now = now or timezone.now()
    targets = publishers()
    order = {target: position for position, target in enumerate(targets)}
    pending = sorted(
        AuditPublication.objects.filter(published_at=None, target__in=list(targets)),
        key=lambda row: (row.checkpoint_size, order[row.target]),
    )
    results: list[tuple[AuditPublication, str]] = []
    blocked: set[str] = set()
    for publication in pending:
        if publication.target in blocked:
            continue
        checkpoint = AuditCheckpoint.objects.filter(size=publication.checkpoint_size).first()
        if checkpoint is None:
            continue
        publication.attempts += 1
        try:
            targets[publication.target](checkpoint)
        except PublishError as exc:
            blocked.add(publication.target)
            publication.failing_since = publication.failing_since or now
            publication.last_error = str(exc)[:300]
            logger.warning(
                "audit checkpoint %d not published to %s: %s",
                checkpoint.size,
                publication.target,
                publication.last_error,
            )
            results.append((publication, publication.last_error))
        else:
            publication.published_at = now
            results.append((publication, "ok"))
        publication.save(update_fields=["attempts", "failing_since", "last_error", "published_at"])
    return results


def checkpoint_health(now: datetime | None = None) -> str:
    """For /healthz: "not configured", "ok", "publish failing since <time>", "overdue
    since <time>" (the periodic task is not signing), or "no checkpoint yet"."""
    if not settings.AUDIT_SIGNING_KEY.strip():
        return "not configured"
    now = now or timezone.now()
    failing = (
        AuditPublication.objects.filter(published_at=None, target__in=publication_targets())
        .exclude(failing_since=None)
        .aggregate(since=Min("failing_since"))["since"]
    )
    if failing is not None:
        return f"publish failing since {failing.isoformat(timespec='seconds')}"
    latest = AuditCheckpoint.objects.order_by("-size").first()
    if chain_head_size() > (latest.size if latest else 0):
        if latest is None:
            return "no checkpoint yet"
        # One missed interval is normal (it is signed at the next tick); two is not.
        interval = timedelta(minutes=settings.AUDIT_CHECKPOINT_MINUTES)
        if latest.created_at + 2 * interval < now:
            return f"overdue since {(latest.created_at + interval).isoformat(timespec='seconds')}"
    return "ok"
