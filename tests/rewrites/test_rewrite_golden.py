"""Golden fixtures, one directory per rewrite under ``golden/``: ``input.ded``, ``steps.txt`` (the
chain, as the CLI takes it, each step naming the rewrite it must use) and ``expected.ded``. The
rewritten program must print exactly as expected, re-parse to itself, pass the static checks,
and behave like the input in simulation.

Regenerate the expected files after an intended change with
``HYDRODEPLOY_UPDATE_GOLDEN=1 pytest tests/rewrites``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from hydrodeploy.language import check, load_program, parse, print_program
from hydrodeploy.rewrites.chain import apply_chain, module_named, parse_steps
from hydrodeploy.simulate import Network, Workload
from hydrodeploy.simulate.equivalence import check_equivalence

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "steps.txt").exists())
UPDATE = os.environ.get("HYDRODEPLOY_UPDATE_GOLDEN") == "1"

REORDERING = Network(min_delay_ms=0.05, max_delay_ms=10.0)
LOSSY = Network(min_delay_ms=0.5, max_delay_ms=5.0, loss=0.1)


@dataclass(frozen=True)
class Setting:
    """How a case is simulated: whether its protocol tolerates message loss (clients retry), the
    workload, and the comparison mode."""

    loss: bool = True
    requests: int = 40
    clients: int = 4
    mode: str = "per-request"
    timeout_ms: float | None = None  # clients re-send unanswered requests (always, with loss)


SETTINGS = {
    # Replies are sent once (a lost reply is never repeated), so no loss; acknowledgements are
    # persisted and forwarded every tick, so keep the run short.
    "monotonic": Setting(loss=False, requests=20),
    # Replies are sent once, and a lost batch message stalls its stream for good (the fault model
    # of the report: general omission), so no loss.
    "asymmetric": Setting(loss=False, requests=30),
    "state_machine": Setting(loss=False, requests=30),
    # The coordinator's two-phase commit does not retransmit: a lost vote freezes the partitions
    # for good (an omission failure of the original node; safe, not live), so no loss.
    "partial": Setting(loss=False, requests=30),
    # Paxos: delivery between live nodes is assumed reliable; requests that reach no leader are
    # retried; replies carry slots, compared as a replicated log.
    "sealing": Setting(loss=False, requests=30, mode="log", timeout_ms=500.0),
}


def rewrite(case: str):  # type: ignore[no-untyped-def]
    base = GOLDEN / case
    program = load_program(str(base / "input.ded"))
    steps = parse_steps((base / "steps.txt").read_text())
    out, topology, applied = apply_chain(program, steps)
    return program, steps, out, topology, applied


@pytest.mark.parametrize("case", CASES)
def test_rewrite_matches_golden(case: str) -> None:
    _, steps, out, _, applied = rewrite(case)
    for step, done in zip(steps, applied, strict=True):
        assert step.using is not None, "golden steps name the rewrite they exercise"
        assert done.result.rewrite == module_named(step.using).NAME
    text = print_program(out)
    expected = GOLDEN / case / "expected.ded"
    if UPDATE:
        expected.write_text(text)
    assert text == expected.read_text()


@pytest.mark.parametrize("case", CASES)
def test_rewritten_program_is_a_program(case: str) -> None:
    _, _, out, _, _ = rewrite(case)
    text = print_program(out)
    again = parse(text, f"{case}/expected.ded")
    assert again == out
    check(again)


@pytest.mark.parametrize("case", CASES)
def test_rewritten_program_behaves_like_the_input(case: str) -> None:
    program, _, out, topology, _ = rewrite(case)
    setting = SETTINGS.get(case, Setting())
    networks = [REORDERING, LOSSY] if setting.loss else [REORDERING]
    for network in networks:
        workload = Workload(
            clients=setting.clients,
            requests=setting.requests,
            timeout_ms=150.0 if network.loss else setting.timeout_ms,
        )
        report = check_equivalence(
            program,
            out,
            rewritten_topology=topology,
            seeds=range(8),
            network=network,
            workload=workload,
            mode=setting.mode,  # type: ignore[arg-type]
            max_time_ms=20_000.0,
        )
        assert report.equivalent, "\n".join(str(d) for d in report.differences)
        assert report.completed == len(report.seeds) * setting.requests
