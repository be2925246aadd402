"""`hydrodeploy explain` and `hydrodeploy rewrite`: what they print, the negative cases the issue
asks `explain` to explain (with their source locations), and user mistakes as one located error
line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hydrodeploy.cli.main import main
from hydrodeploy.language import load_program

ROOT = Path(__file__).resolve().parents[1]
VOTING = str(ROOT / "protocols" / "voting.ded")
PAXOS = str(ROOT / "protocols" / "paxos.ded")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_lists_applicable_rewrites_with_their_targets(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", VOTING)
    assert code == 0
    assert "+ functional decoupling of ballot (line 22): move to new component 'leader_broadcaster'" in out
    assert "+ mutually-independent decoupling of votes (line 26), votes (line 27), vote_count (line 31)" in out
    assert "+ partitioning with co-hashing: partition 'participant' into 3 partitions of each of its 3 instances" in out


def test_explain_says_the_client_facing_leader_is_never_partitioned(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "explain", VOTING, "--component", "leader")
    line = next(ln for ln in out.splitlines() if "- partitioning with co-hashing" in ln)
    assert "'leader' receives 'client_in' from external clients" in line
    assert line.endswith(f"[{VOTING}:17:1]")


def test_explain_says_why_paxos_acceptors_cannot_be_co_hashed(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "explain", PAXOS, "--component", "acceptor")
    line = next(ln for ln in out.splitlines() if "- partitioning with co-hashing" in ln)
    assert "'max_ballot' is the max of all facts of ballot_seen (no group-by key)" in line
    max_ballot = next(n for n, text in enumerate(Path(PAXOS).read_text().splitlines(), 1) if "max_ballot(max(b))" in text)
    assert line.endswith(f"[{PAXOS}:{max_ballot}:3]")


def test_explain_says_a_component_with_aggregation_is_not_functional(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "explain", VOTING, "--component", "leader")
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("- functional decoupling of votes"))
    assert "'vote_count' aggregates (count)" in line
    assert line.endswith(f"[{VOTING}:31:35]")


def test_explain_unknown_component_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "explain", VOTING, "--component", "nope")
    assert code == 2
    assert err.strip().count("\n") == 0 and "no component 'nope'" in err


def test_rewrite_applies_verifies_and_writes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_path = tmp_path / "scaled.ded"
    code, out, _ = run(
        capsys,
        "rewrite",
        VOTING,
        "--decouple",
        "leader:votes,vote_count,committed,client_out:leader_collector",
        "--partition",
        "participant:id:2",
        "--seeds",
        "3",
        "-o",
        str(out_path),
    )
    assert code == 0, out
    assert "mutually-independent decoupling" in out and "partitioning with co-hashing" in out
    assert "verified: equivalent over 3 seeds" in out
    program = load_program(str(out_path))
    assert program.component("leader_collector") is not None
    assert json.loads((tmp_path / "scaled.topology.json").read_text()) == {"partitions": {"participant": 2}}


def test_rewrite_whose_precondition_fails_is_one_located_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "rewrite", VOTING, "--decouple", "leader:vote_count:counter", "-o", str(tmp_path / "x.ded"))
    assert code == 2
    first = err.splitlines()[0]
    assert first.startswith(f"{VOTING}:") and ": error: decouple leader:vote_count:counter:" in first
    assert not (tmp_path / "x.ded").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--decouple", "leader"], "expected COMPONENT:RULES[:NAME]"),
        (["--decouple", "leader:nothing"], "no rule of 'leader' derives 'nothing'"),
        (["--partition", "participant:id:x"], "expected COMPONENT:KEY:N"),
        (["--partition", "ghost:id:2"], "no component 'ghost'"),
    ],
)
def test_rewrite_malformed_targets_are_user_errors(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, _, err = run(capsys, "rewrite", VOTING, *argv)
    assert code == 2
    assert message in err.splitlines()[0]


def test_partitioning_refuses_a_component_whose_address_is_used_as_a_value(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = Path(VOTING).read_text().replace(
        "participant {\n",
        "participant {\n  leader_seen(l) :- ballot(_, _, _), leader(l).\n",
    )
    path = tmp_path / "voting_leader_value.ded"
    path.write_text(source)
    code, _, err = run(
        capsys,
        "rewrite",
        str(path),
        "--decouple",
        "leader:votes,vote_count,committed,client_out:leader_collector",
        "--partition",
        "leader_collector:id:3",
        "--seeds",
        "0",
    )
    assert code == 0  # leader(l) is the leader, not the collector: fine
    source = source.replace("leader_seen(l) :- ballot(_, _, _), leader(l).", "collector_seen(l) :- ballot(_, _, _), leader_collector(l).")
    source = source.replace(".component leader\n", ".component leader\n.component leader_collector\n")
    source = source.replace("participant {\n", "leader_collector {\n}\n\nparticipant {\n")
    path.write_text(source)
    code, _, err = run(capsys, "rewrite", str(path), "--partition", "leader_collector:id:3", "--seeds", "0")
    assert code == 2
    assert "the address of 'leader_collector' is read (in 'participant')" in err.splitlines()[0]



def test_simulate_runs_a_rewritten_program_on_the_partitions_rewrite_recorded(capsys: pytest.CaptureFixture[str]) -> None:
    # ScalablePaxos partitions its acceptors with a coordinator each (protocols/scalable/paxos.ded
    # and its .topology.json): one acceptor instance per partition would never reach a quorum
    code, out, _ = run(capsys, "simulate", str(ROOT / "protocols" / "scalable" / "paxos.ded"), "--clients", "4", "--requests", "20")
    assert code == 0, out
    assert "completed     20 / 20 requests" in out
    assert "acceptor_coordinator" in out
