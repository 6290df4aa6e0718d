import zipfile
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit.notes import (
    Checkpoint,
    NoteFormatError,
    SignatureError,
    VerifierKey,
    open_checkpoint,
    parse_verifier_key,
)
from audit.proofs import (
    ProofFormatError,
    consistency_from_database,
    consistency_lookup,
    consistency_problem,
    proof_verify,
)
from audit.toolkit import StrictCommand
from audit.tree import TreeUnavailableError
from audit.verification import (
    ExportFormatError,
    verification_note,
    verify_database,
    verify_file,
)

MODES = ("checkpoint", "consistency", "proof")


def _unusable(message: str) -> CommandError:
    # A bad key, a malformed checkpoint or proof: nothing was verified (exit 2), which
    # is not the same as a verification that failed (exit 1).
    return CommandError(message, returncode=2)


class Command(StrictCommand):
    help = (
        "Re-walk the audit hash chain and report OK or the first bad sequence number and "
        "why (changed, missing, reordered). With --file, check an export offline. With "
        "--checkpoint and the log's public key, also check that the log has the signed "
        "checkpoint's Merkle root; --consistency checks that a later checkpoint extends an "
        "earlier one; --proof checks an `audit_proof` file offline. Exit 1: verification "
        "failed; exit 2: a bad key, checkpoint or proof file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--file", type=Path, help="a JSONL file from `export_audit --with-integrity`"
        )
        parser.add_argument(
            "--partial",
            action="store_true",
            help="the file is a filtered export: gaps in the sequence are expected",
        )
        parser.add_argument(
            "--checkpoint", type=Path, metavar="FILE", help="a signed checkpoint (note) file"
        )
        parser.add_argument(
            "--consistency",
            nargs=2,
            type=Path,
            metavar=("OLD", "NEW"),
            help="two signed checkpoint files: check that NEW extends OLD",
        )
        parser.add_argument(
            "--bundle",
            type=Path,
            help="with --consistency: take the proof from this evidence bundle (zip) "
            "instead of the database",
        )
        parser.add_argument("--proof", type=Path, metavar="FILE", help="a file from audit_proof")
        parser.add_argument(
            "--pubkey",
            metavar="KEY",
            help="the log's public key (name+keyid+base64), or a file holding it",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path | None = options["file"]
        modes = [mode for mode in MODES if options[mode]]
        if len(modes) > 1:
            raise CommandError("give one of --checkpoint, --consistency and --proof")
        if options["partial"] and (path is None or modes):
            raise CommandError("--partial only applies to --file (without --checkpoint)")
        if options["bundle"] and modes != ["consistency"]:
            raise CommandError("--bundle only applies to --consistency")
        if path is not None and modes and modes != ["checkpoint"]:
            raise CommandError("--file applies to the database's place: alone or with --checkpoint")
        if modes and not options["pubkey"]:
            raise CommandError(f"--{modes[0]} needs the log's public key (--pubkey)")
        if options["pubkey"] and not modes:
            raise CommandError("--pubkey applies to --checkpoint, --consistency or --proof")
        if not modes:
            self._chain(path, partial=options["partial"], checkpoint=None)
            return
        key = self._key(options["pubkey"])
        if options["checkpoint"]:
            self._chain(
                path, partial=False, checkpoint=self._checkpoint(options["checkpoint"], key)
            )
        elif options["consistency"]:
            old_path, new_path = options["consistency"]
            self._consistency(
                self._checkpoint(old_path, key, "OLD"),
                self._checkpoint(new_path, key, "NEW"),
                options["bundle"],
            )
        else:
            self._proof(options["proof"], key)

    def _chain(self, path: Path | None, *, partial: bool, checkpoint: Checkpoint | None) -> None:
        if path is None:
            verdict = verify_database(checkpoint)
            verification_note(verdict)
        else:
            try:
                with path.open(encoding="utf-8") as handle:
                    verdict = verify_file(handle, contiguous=not partial, checkpoint=checkpoint)
            except OSError as exc:
                raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc
            except (ExportFormatError, UnicodeDecodeError) as exc:
                raise CommandError(f"{path}: {exc}") from exc
        if not verdict.ok:
            raise CommandError(verdict.describe())
        self.stdout.write(verdict.describe())

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise _unusable(f"cannot read {path}: {reason or exc}") from None

    def _key(self, value: str) -> VerifierKey:
        text = self._read(Path(value)) if Path(value).is_file() else value
        try:
            return parse_verifier_key(text)
        except NoteFormatError as exc:
            raise _unusable(f"--pubkey: {exc}") from None

    def _checkpoint(self, path: Path, key: VerifierKey, which: str = "") -> Checkpoint:
        label = f"{which} " if which else ""
        try:
            return open_checkpoint(self._read(path), key)
        except NoteFormatError as exc:
            raise _unusable(f"{label}{path}: {exc}") from None
        except SignatureError as exc:
            raise CommandError(f"FAIL: signature of {label}{path}: {exc}") from None

    def _consistency(self, old: Checkpoint, new: Checkpoint, bundle: Path | None) -> None:
        proof: list[bytes] = []
        source = "the bundle" if bundle else "the database"
        if old.size <= new.size:
            try:
                if bundle is None:
                    proof = consistency_from_database(old.size, new.size)
                else:
                    with zipfile.ZipFile(bundle) as archive:
                        text = archive.read("consistency.json").decode()
                    proof = consistency_lookup(text, old.size, new.size)
            except TreeUnavailableError as exc:
                raise _unusable(f"the database cannot prove it: {exc}") from None
            except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
                raise _unusable(f"{bundle}: not an evidence bundle ({exc})") from None
            except ProofFormatError as exc:
                raise _unusable(f"{bundle}: {exc}") from None
        problem = consistency_problem(old, new, proof)
        if problem is not None:
            raise CommandError(f"FAIL: {problem}")
        self.stdout.write(
            f"OK: the log at tree size {new.size} (root {new.root_b64}) extends the log at "
            f"tree size {old.size} (root {old.root_b64}); consistency proof from {source}"
        )

    def _proof(self, path: Path, key: VerifierKey) -> None:
        try:
            verdict = proof_verify(self._read(path), key)
        except (ProofFormatError, NoteFormatError) as exc:
            raise _unusable(f"{path}: {exc}") from None
        except SignatureError as exc:
            raise CommandError(f"FAIL: signature of {path}: {exc}") from None
        if not verdict.ok:
            raise CommandError(verdict.describe())
        self.stdout.write(verdict.describe())
