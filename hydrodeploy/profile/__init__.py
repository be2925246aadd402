"""Profiles of running deployments: where every node's CPU goes.

- :mod:`.counters` — per-node CPU against its quota, per-rule CPU and firings, messages and bytes
  per channel, from the counters the node processes report (differenced over a window);
- :mod:`.sampler` — process CPU of every node and client process, sampled with psutil while a
  point runs (the per-node CPU series of a report), and this machine's busy CPUs;
- :mod:`.perf` — ``perf record -e cpu-clock`` / ``perf script`` on one node, stacks folded and
  attributed to the program's rules and to the runtime's own work (serialization, HMAC, sockets,
  disk, kernel); says why when perf is missing or not permitted;
- :mod:`.flamegraph` — a flame graph image of folded stacks.
"""

from __future__ import annotations

from hydrodeploy.profile.counters import (
    ChannelRate,
    NodeProfile,
    RuleProfile,
    WindowProfile,
    window_profile,
)

__all__ = ["ChannelRate", "NodeProfile", "RuleProfile", "WindowProfile", "window_profile"]
