"""`hydrodeploy check` on the corpus: every malformed program fails with its one expected located
error (exit 2, a caret under the reported column, no traceback); well-formed programs pass.

Each ``tests/corpus/malformed/NAME.ded`` holds exactly one error; ``NAME.expected`` is the first line
of stderr, ``NAME.ded:LINE:COL: error: MESSAGE``, for the command run from the corpus directory.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "corpus"
MALFORMED = CORPUS / "malformed"
VALID = CORPUS / "valid"
MALFORMED_FILES = sorted(p.name for p in MALFORMED.glob("*.ded"))
VALID_FILES = sorted(p.name for p in VALID.glob("*.ded"))

HEADER = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): error: (?P<message>.+)$")
CARET = re.compile(r"^  (?P<pad> *)\^~*$")


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


def hydrodeploy_check(cwd: Path, *files: str) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "hydrodeploy.cli.main", "check", *files],
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def malformed_runs() -> dict[str, Run]:
    """One real `hydrodeploy check` process per malformed file, run a few at a time."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = pool.map(lambda name: hydrodeploy_check(MALFORMED, name), MALFORMED_FILES)
        return dict(zip(MALFORMED_FILES, runs, strict=True))


def test_corpus_is_complete() -> None:
    assert len(MALFORMED_FILES) >= 30
    expected = sorted(p.name for p in MALFORMED.glob("*.expected"))
    assert expected == sorted(name.removesuffix(".ded") + ".expected" for name in MALFORMED_FILES)
    for category in (
        "syntax_",
        "unsafe_",
        "unstratifiable_negation",
        "unstratifiable_aggregation",
        "arity_",
        "unbound_destination",
        "unknown_relation",
        "unknown_component_",
        "duplicate_",
        "bad_encoding",
        "empty",
        "comment_only",
        "log_",
        "output_",
    ):
        assert any(name.startswith(category) for name in MALFORMED_FILES), category


def test_bad_encoding_file_is_really_not_utf8() -> None:
    with pytest.raises(UnicodeDecodeError):
        (MALFORMED / "bad_encoding.ded").read_bytes().decode("utf-8")


def test_empty_and_comment_only_files_have_no_item() -> None:
    assert (MALFORMED / "empty.ded").read_bytes() == b""
    lines = (MALFORMED / "comment_only.ded").read_text("utf-8").splitlines()
    assert lines and all(line.lstrip().startswith(("#", "//")) for line in lines)


@pytest.mark.parametrize("name", MALFORMED_FILES)
def test_malformed_program_is_rejected(name: str, malformed_runs: dict[str, Run]) -> None:
    run = malformed_runs[name]
    expected = (MALFORMED / name.replace(".ded", ".expected")).read_text("utf-8").strip("\n")
    assert "Traceback" not in run.stderr, run.stderr
    assert run.code == 2, run.stderr
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert lines, "nothing printed on stderr"
    assert lines[0] == expected

    header = HEADER.match(lines[0])
    assert header is not None, lines[0]
    assert header["file"] == name
    # The source line is printed, then a caret under the reported column.
    assert len(lines) >= 3, run.stderr
    caret = CARET.match(lines[2])
    assert caret is not None, run.stderr
    assert len(caret["pad"]) + 1 == int(header["col"]), run.stderr


@pytest.mark.parametrize("name", VALID_FILES)
def test_valid_program_passes(name: str) -> None:
    run = hydrodeploy_check(VALID, name)
    assert run.code == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout.startswith(f"{name}: ok (")


def test_check_stops_at_the_first_bad_file() -> None:
    run = hydrodeploy_check(CORPUS, "valid/echo.ded", "malformed/unknown_relation.ded", "valid/voting.ded")
    assert run.code == 2
    assert run.stdout.splitlines() == ["valid/echo.ded: ok (1 components, 1 rules)"]
    assert run.stderr.startswith("malformed/unknown_relation.ded:9:23: error: unknown relation 'reqest'")


def test_missing_file_is_a_user_error() -> None:
    run = hydrodeploy_check(CORPUS, "no_such_file.ded")
    assert run.code == 2
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith("error: cannot read no_such_file.ded")
