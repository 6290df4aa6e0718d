"""Signed checkpoints of the ledger: the signing key from the settings, making and
storing a checkpoint, and the periodic tick that makes one when it is due.

The private key is read from AUDIT_SIGNING_KEY (the key itself, or a file holding it)
each time it is needed; it is never logged, stored or put into an error message.
"""

import logging
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import merkle
from audit.integrity import GENESIS_HASH
from audit.models import AuditCheckpoint, AuditPublication
from audit.notes import SIGNER_PREFIX, Checkpoint, NoteFormatError, SignerKey, parse_signer_key
from audit.notes import sign_note as note_sign
from audit.publishing import publication_targets, publications_deliver
from audit.selectors import chain_head_size
from audit.tree import ChainError, tree_extend

logger = logging.getLogger(__name__)

NOT_CONFIGURED = (
    "AUDIT_SIGNING_KEY is not set, so no checkpoint can be signed "
    "(manage.py audit_keygen makes a key pair)"
)


class SigningKeyError(Exception):
    """AUDIT_SIGNING_KEY is set but unusable. The message never quotes it."""


class CheckpointNotConfiguredError(Exception):
    pass


class CheckpointError(Exception):
    """The ledger cannot be signed as it is (a gap, a broken link, fewer events than
    the last checkpoint): a signature now would vouch for a damaged log."""


def signing_key() -> SignerKey | None:
    """The configured signer key, or None when AUDIT_SIGNING_KEY is unset."""
    raw = settings.AUDIT_SIGNING_KEY.strip()
    if not raw:
        return None
    text = raw
    if not raw.startswith(SIGNER_PREFIX):
        try:
            text = Path(raw).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError, ValueError):
            raise SigningKeyError(
                f"AUDIT_SIGNING_KEY is neither a signer key ({SIGNER_PREFIX}...) "
                "nor the path of a readable file holding one"
            ) from None
    try:
        return parse_signer_key(text)
    except NoteFormatError as exc:
        raise SigningKeyError(f"AUDIT_SIGNING_KEY: {exc}") from None


def default_key_name() -> str:
    """The log's name for a new key: AUDIT_LOG_ORIGIN, or SITE_URL's host and port
    followed by /audit (a schema-less URL, as c2sp.org/signed-note recommends)."""
    if settings.AUDIT_LOG_ORIGIN:
        return str(settings.AUDIT_LOG_ORIGIN)
    return f"{urlsplit(settings.SITE_URL).netloc or 'localhost'}/audit"


def log_origin(key: SignerKey) -> str:
    return str(settings.AUDIT_LOG_ORIGIN) or key.name


def checkpoint_latest() -> AuditCheckpoint | None:
    return AuditCheckpoint.objects.order_by("-size").first()


def checkpoint_create() -> tuple[AuditCheckpoint, bool]:
    """Sign and store a checkpoint of the whole ledger as it is now; (checkpoint,
    created). With no event since the latest checkpoint, that one is returned."""
    key = signing_key()
    if key is None:
        raise CheckpointNotConfiguredError(NOT_CONFIGURED)
    size = chain_head_size()
    latest = checkpoint_latest()
    if latest is not None and latest.size == size:
        return latest, False
    base_size, base_root, base_hash = (
        (latest.size, bytes.fromhex(latest.root_hash), latest.last_hash)
        if latest
        else (0, merkle.EMPTY_ROOT, GENESIS_HASH)
    )
    try:
        root, last_hash = tree_extend(
            base_size=base_size, base_root=base_root, base_hash=base_hash, size=size
        )
    except ChainError as exc:
        raise CheckpointError(f"refusing to sign: {exc}") from None
    note = note_sign(Checkpoint(log_origin(key), size, root).text, key)
    try:
        with transaction.atomic():
            checkpoint = AuditCheckpoint.objects.create(
                size=size, root_hash=root.hex(), last_hash=last_hash, note=note
            )
            AuditPublication.objects.bulk_create(
                [AuditPublication(checkpoint_size=size, target=t) for t in publication_targets()]
            )
    except IntegrityError:  # a concurrent run signed the same size first
        return AuditCheckpoint.objects.get(size=size), False
    logger.info("audit checkpoint signed: size %d", size)
    return checkpoint, True


def checkpoint_due(now: datetime) -> bool:
    """New events exist and the latest checkpoint is AUDIT_CHECKPOINT_MINUTES old."""
    latest = checkpoint_latest()
    if chain_head_size() <= (latest.size if latest else 0):
        return False
    interval = timedelta(minutes=settings.AUDIT_CHECKPOINT_MINUTES)
    return latest is None or latest.created_at <= now - interval


def checkpoint_tick(now: datetime | None = None) -> str:
    """What the periodic task does every minute: sign a checkpoint when one is due, and
    (re)try every pending publication. Failures are logged, never raised: the next
    tick tries again."""
    now = now or timezone.now()
    outcome = "not configured"
    try:
        if signing_key() is not None:
            outcome = "not due"
            if checkpoint_due(now):
                checkpoint, _ = checkpoint_create()
                outcome = f"signed {checkpoint.size}"
    except (SigningKeyError, CheckpointError) as exc:
        logger.error("audit checkpoint not signed: %s", exc)
        outcome = "failed"
    publications_deliver(now=now)
    return outcome
