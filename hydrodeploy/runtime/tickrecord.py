"""Recording a node's ticks, to replay them in one process (``python -m bench.tick_replay``).

A node started with ``HYDRODEPLOY_RECORD_TICKS=DIR`` in its environment writes
``DIR/<address>.ticks``: its :class:`~hydrodeploy.runtime.node.NodeSpec` (without the secret) and
then, for every tick, the facts it took from its inbox and the timers that fired — everything the
evaluator's result depends on. Replaying the file through a fresh evaluator repeats the node's
ticks exactly, so their CPU can be measured and profiled without the cluster's noise (quota
throttling, other processes) and different evaluators or program versions compared on the same
input. Records are msgpack (values are ints, floats, strings and booleans; tuples come back as
tuples), never pickle: replaying a file runs no code from it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgpack

from hydrodeploy.runtime.codec import Fact

if TYPE_CHECKING:
    from hydrodeploy.runtime.node import NodeSpec

ENV = "HYDRODEPLOY_RECORD_TICKS"


def recording_path(directory: str, address: str) -> Path:
    return Path(directory) / (address.replace("/", "_") + ".ticks")


class TickRecorder:
    """Appends one record per tick to the node's file (buffered: a few hundred bytes per tick)."""

    def __init__(self, spec: NodeSpec, directory: str) -> None:
        header = {k: v for k, v in asdict(spec).items() if k != "secret"}
        path = recording_path(directory, spec.address)
        path.parent.mkdir(parents=True, exist_ok=True)  # every node may be the first to record
        self.file: IO[bytes] = open(path, "wb")  # noqa: SIM115
        self.file.write(msgpack.packb(header, use_bin_type=True))

    def tick(self, inbox: list[tuple[str, Fact]], timers: list[str]) -> None:
        self.file.write(msgpack.packb([inbox, timers], use_bin_type=True))

    def close(self) -> None:
        self.file.close()


def recorder_from_env(spec: NodeSpec) -> TickRecorder | None:
    directory = os.environ.get(ENV)
    return TickRecorder(spec, directory) if directory else None


def read_recording(path: str | Path) -> tuple[dict[str, Any], Iterator[tuple[list[tuple[str, Fact]], list[str]]]]:
    """The recorded node's spec fields and its ticks: (inbox, timers) in order."""
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False, use_list=False, strict_map_key=False)
        records = list(unpacker)
    if not records or not isinstance(records[0], dict):
        raise ValueError(f"{path}: not a tick recording (no header)")
    header = dict(records[0])

    def ticks() -> Iterator[tuple[list[tuple[str, Fact]], list[str]]]:
        for inbox, timers in records[1:]:
            yield list(inbox), list(timers)  # use_list=False: every fact is already a tuple

    return header, ticks()
