"""The layers of DESIGN.md are checked, not hoped for: import-linter's contracts (in
pyproject.toml, run by CI) hold for the code as it is, and break on a violation."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stack import ROOT

PACKAGES = ("audit", "multichannel", "whatsapp", "web")
LINT = Path(sys.executable).parent / "lint-imports"


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache", str(tree / "pyproject.toml")],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the project's packages and configuration to break on purpose."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_hold_for_the_code_as_it_is(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "violation", "contract"),
    [
        ("audit/evidence.py", "import multichannel.models", "the core above the ledger BROKEN"),
        ("multichannel/processing.py", "import whatsapp.graph", "the core above the ledger BROKEN"),
        ("whatsapp/delivery.py", "import web.services", "the core above the ledger BROKEN"),
        ("web/apis.py", "import multichannel.sandbox.faults", "imports the sandbox BROKEN"),
        ("audit/toolkit.py", "import audit.models", "toolkit imports no app BROKEN"),
    ],
)
def test_a_violation_breaks_its_contract(
    tree: Path, module: str, violation: str, contract: str
) -> None:
    path = tree / module
    path.write_text(f"{violation}  # noqa\n" + path.read_text())
    result = lint(tree)
    assert result.returncode != 0
    assert contract in result.stdout, result.stdout
