"""The ledger's Merkle tree (RFC 9162) and signed-note/checkpoint formats
(c2sp.org/signed-note, tlog-checkpoint), against the reference implementations' known
answers; and the bundle's standalone verify.py computing the same things."""

import hashlib

import pytest

from audit import bundle_verify, merkle
from audit.notes import (
    Checkpoint,
    NoteFormatError,
    SignatureError,
    generate_key,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
)

# RFC 6962's test leaves and the roots of their prefixes (certificate-transparency's
# merkle tree tests): a leaf hash is SHA-256(0x00 || data).
RFC6962_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
RFC6962_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# golang.org/x/mod/sumdb/note's documented example: its key and the exact signed note.
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
    "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162's recursive definition, as a reference."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return merkle.node_hash(mth(leaves[:k]), mth(leaves[k:]))


LEAVES = [
    merkle.event_leaf_hash(n, hashlib.sha256(str(n).encode()).hexdigest()) for n in range(1, 70)
]


def reader(level: int, index: int) -> bytes:
    return mth(LEAVES[index << level : (index + 1) << level])


def test_roots_match_the_rfc_6962_test_vectors() -> None:
    builder = merkle.RootBuilder()
    for leaf, root in zip(RFC6962_LEAVES, RFC6962_ROOTS, strict=True):
        builder.push(merkle.leaf_hash(leaf))
        assert builder.root().hex() == root
    assert merkle.RootBuilder().root() == hashlib.sha256(b"").digest()


def test_a_leaf_is_the_sequence_and_the_content_digest() -> None:
    digest = "ab" * 32
    assert merkle.leaf_data(3, digest) == bytes.fromhex("0000000000000003" + digest)
    assert (
        merkle.event_leaf_hash(3, digest)
        == hashlib.sha256(b"\x00" + merkle.leaf_data(3, digest)).digest()
    )
    with pytest.raises(ValueError, match="no leaf"):
        merkle.leaf_data(3, "ab" * 31)


def test_every_inclusion_proof_verifies_and_no_other_leaf_does() -> None:
    for size in range(1, len(LEAVES)):
        root = mth(LEAVES[:size])
        assert merkle.range_root(0, size, reader) == root
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, reader)
            assert merkle.verify_inclusion(index, size, LEAVES[index], proof, root)
            assert bundle_verify.verify_inclusion(index, size, LEAVES[index], proof, root)
            assert not merkle.verify_inclusion(index, size, LEAVES[size], proof, root)
            if size > 1:
                assert not merkle.verify_inclusion(
                    (index + 1) % size, size, LEAVES[index], proof, root
                )


def test_every_consistency_proof_verifies_and_a_changed_history_does_not() -> None:
    forged = [*LEAVES[:5], merkle.leaf_hash(b"forged"), *LEAVES[6:]]
    for new in range(1, 40):
        for old in range(0, new + 1):
            proof = merkle.consistency_proof(old, new, reader)
            old_root, new_root = mth(LEAVES[:old]), mth(LEAVES[:new])
            assert merkle.verify_consistency(old, new, old_root, new_root, proof)
            assert bundle_verify.verify_consistency(old, new, old_root, new_root, proof)
            if 5 < old < new:
                assert not merkle.verify_consistency(old, new, mth(forged[:old]), new_root, proof)


def test_a_root_builder_carries_on_from_a_stored_edge() -> None:
    edge = [reader(5, 0), reader(2, 8), reader(0, 36)]  # 32 + 4 + 1 = 37 leaves
    builder = merkle.RootBuilder.from_edge(37, edge)
    for leaf in LEAVES[37:60]:
        builder.push(leaf)
    assert builder.root() == mth(LEAVES[:60])


def test_notes_match_the_go_reference_byte_for_byte() -> None:
    signer = parse_signer_key(GO_SIGNER)
    assert signer.text == GO_SIGNER
    assert signer.verifier.text == GO_VERIFIER
    assert sign_note(GO_TEXT, signer) == GO_NOTE
    assert open_note(GO_NOTE, parse_verifier_key(GO_VERIFIER)) == GO_TEXT
    assert bundle_verify.parse_public_key(GO_VERIFIER).text == GO_VERIFIER


def test_a_key_pair_round_trips_and_its_repr_hides_the_private_key() -> None:
    key = generate_key("example.test/audit")
    assert parse_signer_key(key.text).verifier == key.verifier
    assert parse_verifier_key(key.verifier.text) == key.verifier
    assert key.text.split("+")[3] not in repr(key)
    assert key.verifier.text.startswith(f"example.test/audit+{key.id.hex()}+")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense", "not of the form"),
        ("name+c74f20a3+not base64!", "not valid base64"),
        ("name+c74f20a3+AAAA", "not an Ed25519 key"),
        ("PeterNeumann+00000000+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
    ],
)
def test_a_malformed_public_key_is_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(NoteFormatError, match=message):
        parse_verifier_key(text)


def test_a_mangled_private_key_is_refused_without_quoting_it() -> None:
    mangled = GO_SIGNER[:-4] + "AAAA"
    with pytest.raises(NoteFormatError) as caught:
        parse_signer_key(mangled)
    assert mangled[20:] not in str(caught.value)


def test_a_checkpoint_is_three_lines_signed() -> None:
    key = generate_key("example.test/audit")
    checkpoint = Checkpoint("example.test/audit", 12, bytes(range(32)))
    note = sign_note(checkpoint.text, key)
    assert note.startswith(
        "example.test/audit\n12\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n— "
    )
    assert open_checkpoint(note, key.verifier) == checkpoint
    other = generate_key("example.test/audit")
    with pytest.raises(SignatureError, match="not signed by the key"):
        open_checkpoint(note, other.verifier)
    edited = note.replace("\n12\n", "\n13\n")
    with pytest.raises(SignatureError, match="not valid"):
        open_checkpoint(edited, key.verifier)


@pytest.mark.parametrize(
    "text",
    ["", "origin\n12\n", "origin\n012\nAA==\n", "origin\n12\nAA==\n", "origin\nx\nAA==\n"],
)
def test_a_malformed_checkpoint_is_refused(text: str) -> None:
    with pytest.raises(NoteFormatError, match="not a checkpoint"):
        parse_checkpoint(text)
