"""How a node process runs Python's cyclic garbage collector.

CPython starts a full collection when the containers that survived the young generations exceed a
quarter of the long-lived ones. It counts container objects, but a persisted relation is one set
whose entries are tuples of atoms, which the collector stops tracking: the count stays small, so
full collections come often, and each walks every entry of every set. A Paxos replica (three
relations growing by one fact per request) spent 28-37% of its CPU in them (perf, 21 November),
and a full collection of a large relation at a twentieth of a core stalls the node for a whole
scheduling period or more.

Nodes therefore collect only the young generations: what survives them (relations, connections,
the compiled program) is left to reference counting, which frees everything that holds no cycle.
The runtime's long-lived data are sets and dicts of tuples of atoms, so nothing of it is lost;
cyclic garbage that lives through two young collections stays until the process exits.
``HYDRODEPLOY_GC=python`` keeps CPython's defaults (to compare).
"""

from __future__ import annotations

import gc
import os

ENV = "HYDRODEPLOY_GC"
# Collections of the oldest generation wait for this many collections of the middle one: with the
# young thresholds below, about 10^13 allocations, never in a node's lifetime.
NEVER = 1_000_000_000


def young_only() -> str:
    """Apply the node policy (unless ``HYDRODEPLOY_GC=python``); returns the policy's name."""
    if os.environ.get(ENV, "young") == "python":
        return "python"
    gc.collect()
    gc.freeze()  # the program, its compiled rules and the imported modules: never collected again
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)
    return "young"
