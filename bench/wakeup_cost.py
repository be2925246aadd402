"""What a node's work costs right after it woke from waiting: the CPU time of receiving one frame
(authenticating and decoding it, queueing its messages), back to back and after sleeping.

    python -m bench.wakeup_cost [--frames 300] [--messages 4 45]

A node process that has nothing to do waits in its event loop; the next frame wakes it. On this
machine (a virtual machine) the same work then costs several times the CPU it costs back to back:
the caches are cold, and the virtual CPU may run slower for a while after it idled. The cost model
fits the runtime's cost per frame and per tick on nodes that mostly wake for each frame, so this is
part of what those fits hold, and a node at its quota, which rarely waits, pays less of it. Only
the thread's CPU time around the work is counted (``time.thread_time_ns``), not the sleep.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from hydrodeploy.runtime import codec

GAPS_S = (0.0, 0.0002, 0.001, 0.005, 0.02)  # sleeps before each frame


def frames_of(messages: int, count: int, secret: bytes, nonce: bytes) -> list[bytes]:
    sealer = codec.Sealer(secret, nonce)
    rows = [(i, f"client/{i}", b"x" * 16) for i in range(messages)]
    return [sealer.data("leader/0", [("participant/0", "vote_req", rows)])[0] for _ in range(count)]


def receive_cpu_us(messages: int, count: int, gap_s: float) -> list[float]:
    """The CPU of receiving each of ``count`` frames of ``messages`` messages, sleeping ``gap_s``
    before each (µs)."""
    secret, nonce = os.urandom(32), codec.new_nonce()
    frames = frames_of(messages, count, secret, nonce)
    decoder = codec.FrameDecoder(secret, codec.DecodeStats(), nonce=nonce)
    queue: list[tuple[str, tuple[object, ...]]] = []
    spent = []
    for frame in frames:
        if gap_s:
            time.sleep(gap_s)
        start = time.thread_time_ns()
        for decoded in decoder.feed(frame):
            _, groups = decoded.body
            for _, relation, rows in groups:
                queue.extend((relation, row) for row in rows)
        spent.append((time.thread_time_ns() - start) / 1e3)
        queue.clear()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--messages", type=int, nargs="+", default=[4, 45])
    args = parser.parse_args()
    print(f"{'messages/frame':>14} {'sleep ms':>9} {'median µs':>10} {'mean µs':>8} {'x back to back':>15}")
    for messages in args.messages:
        warm = 0.0
        for gap in GAPS_S:
            spent = receive_cpu_us(messages, args.frames, gap)
            median = statistics.median(spent)
            warm = warm or median
            print(f"{messages:>14} {gap * 1e3:>9.1f} {median:>10.1f} {statistics.fmean(spent):>8.1f} {median / warm:>15.1f}")


if __name__ == "__main__":
    main()
