"""Recording a node's ticks (hydrodeploy/runtime/tickrecord.py) and replaying them (bench/tick_replay.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.tick_replay import load
from hydrodeploy.language import load_program
from hydrodeploy.runtime import tickrecord
from hydrodeploy.runtime.codec import Fact
from hydrodeploy.runtime.node import EvaluatorEngine, Node, NodeSpec
from tests.test_node_ticks import RecordingEngine, spec

ROOT = Path(__file__).resolve().parents[1]

values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(max_size=12),
    st.booleans(),
    st.floats(allow_nan=False),
)
facts = st.lists(st.tuples(st.sampled_from(["req", "vote", "ack"]), st.lists(values, max_size=5).map(tuple)), max_size=8)
ticks = st.lists(st.tuples(facts, st.lists(st.sampled_from(["t1", "t2"]), unique=True)), max_size=10)


@settings(max_examples=60, deadline=None)
@given(ticks)
def test_a_recording_reads_back_every_tick_as_it_was_taken(
    tmp_path_factory: pytest.TempPathFactory, recorded: list[tuple[list[tuple[str, Fact]], list[str]]]
) -> None:
    directory = tmp_path_factory.mktemp("ticks")
    recorder = tickrecord.TickRecorder(spec(), str(directory))
    for inbox, timers in recorded:
        recorder.tick(inbox, timers)
    recorder.close()
    header, read = tickrecord.read_recording(tickrecord.recording_path(str(directory), "n/0"))
    assert list(read) == recorded
    assert header["address"] == "n/0" and "secret" not in header


def test_a_node_records_the_inbox_of_every_tick_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "not" / "yet"  # every node of a deployment may be the first to record
    monkeypatch.setenv(tickrecord.ENV, str(directory))
    engine = RecordingEngine()

    async def scenario() -> None:
        node = Node(spec(), engine)
        ticking = asyncio.get_running_loop().create_task(node._tick_loop())
        for batch in range(3):
            node._on_data("m/0", [("n/0", "req", tuple((batch, f"x{i}") for i in range(batch + 1)))], 100)
            while len(engine.inboxes) <= batch:
                await asyncio.sleep(0.001)
        node.stopping = True
        node._wake.set()
        await ticking
        assert node.recorder is not None
        node.recorder.close()

    asyncio.run(scenario())
    _, read = tickrecord.read_recording(directory / "n_0.ticks")
    assert [inbox for inbox, _ in read] == engine.inboxes


def test_replaying_a_recording_repeats_the_ticks_outputs(tmp_path: Path) -> None:
    program_path = str(ROOT / "protocols" / "voting.ded")
    program = load_program(program_path)
    node_spec = NodeSpec(
        address="leader/0", component="leader", index=0, program=program_path,
        instances={"leader": ["leader/0"], "participant": ["participant/0", "participant/1", "participant/2"]},
        secret="00" * 32, control=("127.0.0.1", 1),
    )  # fmt: skip
    live = EvaluatorEngine(program, node_spec)
    recorder = tickrecord.TickRecorder(node_spec, str(tmp_path))
    inputs: list[tuple[list[tuple[str, Fact]], list[str]]] = [
        ([("client_in", ("client/0", i, "payload")) for i in range(3)], []),
        ([("vote", ("client/0", i, "payload", f"participant/{p}")) for p in range(3) for i in range(2)], []),
        ([], []),
    ]
    outputs = []
    for inbox, timers in inputs:
        recorder.tick(inbox, timers)
        outputs.append(sorted(map(repr, live.step(inbox, timers).outbox)))
    recorder.close()

    replay_spec, recorded = load(str(tickrecord.recording_path(str(tmp_path), "leader/0")), None)
    again = EvaluatorEngine(program, replay_spec)
    assert [sorted(map(repr, again.step(inbox, timers).outbox)) for inbox, timers in recorded] == outputs
    assert any(outputs)
