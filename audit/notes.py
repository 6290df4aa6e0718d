"""Signed notes (c2sp.org/signed-note) with Ed25519 keys, and the checkpoint text they
carry (c2sp.org/tlog-checkpoint).

Key text formats, as the Go reference (golang.org/x/mod/sumdb/note) writes them:

    verifier (public) key   <name>+<key id, 8 hex digits>+base64(0x01 || 32-byte public key)
    signer (private) key    PRIVATE+KEY+<name>+<key id>+base64(0x01 || 32-byte seed)
    key id                  SHA-256(name || 0x0A || 0x01 || public key)[:4]

A signed checkpoint:

    <origin>
    <tree size, decimal>
    <base64 root hash>

    — <key name> base64(key id || Ed25519 signature)

where the signature covers the three lines of text (with their newlines).

Errors never quote key material: a mangled private key must not end up in a log.
"""

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = b"\x01"
SIGNER_PREFIX = "PRIVATE+KEY+"
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
HASH_SIZE = 32
_NO_SPACE_OR_PLUS = re.compile(r"^[^\s+]+$")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteFormatError(ValueError):
    """A key, note or checkpoint that is not well-formed."""


class SignatureError(Exception):
    """A well-formed note without a valid signature by the expected key."""


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteFormatError(f"{what} is not valid base64") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def valid_key_name(name: str) -> bool:
    return bool(_NO_SPACE_OR_PLUS.match(name))


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_key).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    name: str
    id: bytes
    public_key: bytes

    @property
    def text(self) -> str:
        return f"{self.name}+{self.id.hex()}+{_b64(ED25519 + self.public_key)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SignerKey:
    name: str
    id: bytes
    # Kept out of repr(): a key printed in a traceback would be a key in the logs.
    _private: Ed25519PrivateKey = field(repr=False)

    @property
    def public_key(self) -> bytes:
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def verifier(self) -> VerifierKey:
        return VerifierKey(self.name, self.id, self.public_key)

    @property
    def text(self) -> str:
        seed = self._private.private_bytes_raw()
        return f"{SIGNER_PREFIX}{self.name}+{self.id.hex()}+{_b64(ED25519 + seed)}"

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def generate_key(name: str) -> SignerKey:
    if not valid_key_name(name):
        raise NoteFormatError(f"key name {name!r} is empty or contains a space or '+'")
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SignerKey(name, key_id(name, public), private)


def _split_key(text: str, what: str) -> tuple[str, bytes, bytes]:
    # At most two splits: base64 has '+' in its alphabet, a key name never does.
    parts = text.split("+", 2)
    if len(parts) != 3 or not valid_key_name(parts[0]):
        raise NoteFormatError(f"{what} is not of the form name+keyid+base64key")
    name, hex_id, encoded = parts
    if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
        raise NoteFormatError(f"{what} has a key id that is not 8 hex digits")
    data = _b64decode(encoded, what)
    if len(data) != 33 or data[:1] != ED25519:
        raise NoteFormatError(f"{what} is not an Ed25519 key")
    return name, bytes.fromhex(hex_id), data[1:]


def parse_verifier_key(text: str) -> VerifierKey:
    name, given_id, public = _split_key(text.strip(), "the public key")
    if key_id(name, public) != given_id:
        raise NoteFormatError("the public key's key id does not match its name and key")
    return VerifierKey(name, given_id, public)


def parse_signer_key(text: str) -> SignerKey:
    text = text.strip()
    if not text.startswith(SIGNER_PREFIX):
        raise NoteFormatError(f"the signing key does not start with {SIGNER_PREFIX}")
    name, given_id, seed = _split_key(text[len(SIGNER_PREFIX) :], "the signing key")
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    if key_id(name, public) != given_id:
        raise NoteFormatError("the signing key's key id does not match its name and key")
    return SignerKey(name, given_id, private)


def sign_note(text: str, key: SignerKey) -> str:
    if not text.endswith("\n") or _CONTROL.search(text):
        raise NoteFormatError("a note's text ends with a newline and has no control characters")
    signature = key.sign(text.encode())
    return f"{text}\n{SIGNATURE_PREFIX}{key.name} {_b64(key.id + signature)}\n"


def open_note(note: str, key: VerifierKey) -> str:
    """The note's text, once a signature by `key` on it verifies. Signatures by other
    keys are ignored (witness cosignatures, say), as the spec requires."""
    if not note.endswith("\n") or _CONTROL.search(note):
        raise NoteFormatError("not a signed note (it must end with a newline, no control chars)")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteFormatError("not a signed note (no blank line before the signatures)")
    text, lines = note[: split + 1], note[split + 2 :].splitlines()
    if not lines:
        raise NoteFormatError("not a signed note (no signature lines)")
    found = False
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX) or line.count(" ") != 2:
            raise NoteFormatError("not a signed note (malformed signature line)")
        name, encoded = line[len(SIGNATURE_PREFIX) :].split(" ")
        data = _b64decode(encoded, "a signature")
        if len(data) < 5:
            raise NoteFormatError("not a signed note (signature too short)")
        if name != key.name or data[:4] != key.id:
            continue
        found = True
        if not key.verify(text.encode(), data[4:]):
            raise SignatureError(f"the signature by {key.name} is not valid for this text")
    if not found:
        raise SignatureError(f"not signed by the key {key.name}+{key.id.hex()}")
    return text


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    @property
    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{_b64(self.root)}\n"

    @property
    def root_b64(self) -> str:
        return _b64(self.root)


def parse_checkpoint(text: str) -> Checkpoint:
    """The checkpoint in a note's (already verified) text. Extension lines are allowed
    and ignored, as the spec says."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
        raise NoteFormatError("not a checkpoint (origin, size and root hash lines expected)")
    origin, size_text, root_text = lines[:3]
    if not re.fullmatch(r"0|[1-9][0-9]{0,18}", size_text):
        raise NoteFormatError(f"not a checkpoint (tree size {size_text!r} is not a number)")
    root = _b64decode(root_text, "the checkpoint's root hash")
    if len(root) != HASH_SIZE:
        raise NoteFormatError("not a checkpoint (the root hash is not 32 bytes)")
    return Checkpoint(origin, int(size_text), root)


def open_checkpoint(note: str, key: VerifierKey) -> Checkpoint:
    """Parse first (a malformed file is reported as such), then check the signature."""
    split = note.rfind("\n\n")
    parse_checkpoint(note[: split + 1] if split >= 0 else note)
    return parse_checkpoint(open_note(note, key))
