"""CPU per message round trip of the node transport on uvloop against asyncio's own event loop.

    python -m bench.event_loop [--round-trips N] [--repeats R] [--pinning]

Two processes on loopback, each with the runtime's :class:`~hydrodeploy.runtime.transport.Transport`
(HMAC-tagged msgpack frames): one sends a frame of four facts and waits for the answer, the other
answers each frame with one frame of the same facts. Every round trip is two frames, two wake-ups
and two socket writes, as between lightly loaded nodes of a deployment. Prints the CPU time per
round trip of each side (process CPU, so it does not depend much on what else the machine runs)
and the round-trip time, for each event loop, ``R`` times alternating.

``--pinning`` measures uvloop with the two processes pinned to one CPU, then to two different CPUs
(what the local cluster's CPU packing, :func:`hydrodeploy.deploy.local.pack_cpus`, rests on).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from hydrodeploy.runtime import eventloop
from hydrodeploy.runtime.transport import Directory, Groups, Transport

SECRET = b"bench-event-loop-secret-32-bytes"
ROOT = Path(__file__).resolve().parent.parent
WARMUP = 200


async def _answer(my_port: int, peer_port: int) -> None:
    transport: Transport | None = None

    def on_data(sender: str, groups: Groups, size: int) -> None:
        assert transport is not None
        transport.send([("caller", "reply", row) for _, _, rows in groups for row in rows])

    transport = Transport(SECRET, "answerer", on_data, Directory({"caller": ("127.0.0.1", peer_port)}))
    await transport.listen("127.0.0.1", my_port)
    print("ready", flush=True)
    await asyncio.sleep(3600)


async def _call(my_port: int, peer_port: int, round_trips: int) -> None:
    answered = asyncio.Event()

    def on_data(sender: str, groups: Groups, size: int) -> None:
        answered.set()

    transport = Transport(SECRET, "caller", on_data, Directory({"answerer": ("127.0.0.1", peer_port)}))
    await transport.listen("127.0.0.1", my_port)
    facts = [("answerer", "request", (i, "client/1", i, "0123456789abcdef")) for i in range(4)]
    cpu0 = wall0 = 0.0
    for i in range(WARMUP + round_trips):
        if i == WARMUP:
            cpu0, wall0 = time.process_time(), time.monotonic()
        answered.clear()
        transport.send(facts)
        await answered.wait()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    print(f"{cpu / round_trips * 1e6:.1f} {wall / round_trips * 1e6:.1f}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(loop: str, round_trips: int, cpus: tuple[int, int] | None = None) -> tuple[float, float, float]:
    """(caller CPU µs, answerer CPU µs, round-trip µs) per round trip on ``loop``; ``cpus``: the
    CPUs the caller and the answerer are pinned to (None: not pinned)."""
    env = dict(os.environ, **{eventloop.ENV: loop})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    caller_port, answerer_port = _free_port(), _free_port()
    me = [sys.executable, "-m", "bench.event_loop"]
    answerer = subprocess.Popen([*me, "--answer", str(answerer_port), str(caller_port)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    caller_pin = None
    if cpus is not None:
        os.sched_setaffinity(answerer.pid, {cpus[1]})
        caller_pin = functools.partial(os.sched_setaffinity, 0, {cpus[0]})
    try:
        assert answerer.stdout is not None and answerer.stdout.readline().strip() == "ready"
        cpu_before = sum(psutil.Process(answerer.pid).cpu_times()[:2])
        out = subprocess.run(
            [*me, "--call", str(caller_port), str(answerer_port), str(round_trips)],
            capture_output=True, text=True, env=env, cwd=ROOT, check=True, timeout=300, preexec_fn=caller_pin,
        )  # fmt: skip
        answerer_cpu = sum(psutil.Process(answerer.pid).cpu_times()[:2]) - cpu_before
    finally:
        answerer.kill()
        answerer.wait()
    caller_us, rtt_us = (float(x) for x in out.stdout.split())
    return caller_us, answerer_cpu / (WARMUP + round_trips) * 1e6, rtt_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round-trips", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--answer", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--call", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pinning", action="store_true", help="uvloop on one CPU against two CPUs")
    args = parser.parse_args()
    if args.answer:
        eventloop.run(_answer(*args.answer))
        return
    if args.call:
        eventloop.run(_call(*args.call))
        return
    if args.pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            parser.error("--pinning needs two CPUs")
        runs = [("one CPU", "uvloop", (cpus[0], cpus[0])), ("two CPUs", "uvloop", (cpus[0], cpus[1]))]
    else:
        runs = [(loop, loop, None) for loop in ("uvloop", "asyncio")]
    print(f"{'processes on':<14}{'caller CPU µs':>16}{'answerer CPU µs':>18}{'round trip µs':>16}")
    for _ in range(args.repeats):
        for name, loop, pins in runs:
            caller, answerer, rtt = measure(loop, args.round_trips, pins)
            print(f"{name:<14}{caller:>16.1f}{answerer:>18.1f}{rtt:>16.1f}", flush=True)


if __name__ == "__main__":
    main()
