"""The orchestrator's requests to its processes (hydrodeploy/deploy/deployment.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from hydrodeploy.deploy import Cluster, DeployError, Deployment, Member
from hydrodeploy.deploy.deployment import _Peer
from hydrodeploy.deploy.host import Host
from hydrodeploy.runtime.transport import ControlChannel


class Channel:
    """A control channel whose process answers every request at once, or never."""

    def __init__(self, peer: _Peer, answers: bool) -> None:
        self.peer = peer
        self.answers = answers

    def send(self, message: dict[str, Any]) -> None:
        if self.answers:
            asyncio.get_running_loop().call_soon(self.peer.deliver, {"t": message["t"], "data": {}})


def test_a_timeout_names_only_the_processes_that_did_not_answer(tmp_path: Path) -> None:
    names = ["a/0", "b/0", "c/0"]
    members = [Member(n, "node", ("true",), {}) for n in names]
    dep = Deployment(cast(Cluster, None), members, tmp_path)

    async def scenario() -> None:
        dep._failure = asyncio.get_running_loop().create_future()
        for member in members:
            peer = _Peer(member, cast(Host, None))
            peer.channel = cast(ControlChannel, Channel(peer, answers=member.name != "b/0"))
            dep.peers[member.name] = peer
        await dep.request_many(names, {"t": "metrics"}, "metrics", timeout=0.2)

    with pytest.raises(DeployError, match=r"no 'metrics' from b/0 within") as error:
        asyncio.run(scenario())
    assert "a/0" not in str(error.value) and "c/0" not in str(error.value)
    assert "b-0.log" in str(error.value)
