"""BaseVoting written by hand in plain Python, as a node engine with the same network I/O.

The node process, transport, framing, HMAC, batching and client processes are hydrodeploy's; only
the per-tick logic differs: dictionaries and loops instead of the compiled `.ded` rules of
protocols/voting.ded. `bench.network_throughput` compares the two. Select it with
``NodeSpec.engine = "bench.handwritten_voting:engine"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydrodeploy.language import ir
from hydrodeploy.runtime.codec import Fact
from hydrodeploy.runtime.node import NodeSpec, Step
from hydrodeploy.runtime.transport import Message


class Leader:
    """Broadcast each request to every participant; count votes per request; reply once all
    participants voted, then forget the request."""

    timers: tuple[tuple[str, float], ...] = ()

    def __init__(self, participants: list[str]) -> None:
        self.participants = participants
        self.needed = len(participants)
        self.votes: dict[tuple[Any, ...], set[str]] = {}
        self.ticks = 0
        self.accepts: Mapping[str, int] = {"client_in": 3, "vote": 4}

    def step(self, inbox: list[tuple[str, Fact]], timers: list[str]) -> Step:
        out: list[Message] = []
        votes = self.votes
        for relation, row in inbox:
            if relation == "client_in":
                out.extend((p, "ballot", row) for p in self.participants)
            else:  # vote(client, id, payload, from)
                key = row[:3]
                voters = votes.get(key)
                if voters is None:
                    voters = votes[key] = set()
                voters.add(row[3])
                if len(voters) == self.needed:
                    del votes[key]
                    out.append((row[0], "client_out", (row[1], row[2])))
        self.ticks += 1
        return Step(out, [], False)

    def rule_metrics(self) -> list[list[Any]]:
        return []


class Participant:
    """Echo every ballot back to the leader as a vote carrying this participant's address."""

    timers: tuple[tuple[str, float], ...] = ()

    def __init__(self, leader: str, me: str) -> None:
        self.leader = leader
        self.me = me
        self.accepts: Mapping[str, int] = {"ballot": 3}

    def step(self, inbox: list[tuple[str, Fact]], timers: list[str]) -> Step:
        return Step([(self.leader, "vote", (*row, self.me)) for _, row in inbox], [], False)

    def rule_metrics(self) -> list[list[Any]]:
        return []


def engine(program: ir.Program, spec: NodeSpec) -> Leader | Participant:
    if spec.component == "leader":
        return Leader(spec.instances["participant"])
    return Participant(spec.instances["leader"][0], spec.address)
