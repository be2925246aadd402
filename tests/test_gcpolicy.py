"""The node process's garbage-collection policy (hydrodeploy/runtime/gcpolicy.py), each case in a
fresh interpreter: the policy changes process-wide collector state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Grows a persisted-relation-like set while allocating short-lived containers, as a node does
# tick after tick, then reports the collector's statistics and whether a young cycle was freed.
SCRIPT = """
import gc, json, weakref
from hydrodeploy.runtime import gcpolicy
policy = gcpolicy.young_only()
full_before = gc.get_stats()[2]["collections"]
relation = set()
carried = []  # containers that outlive their tick, as a node's carried state does
for tick in range(2000):
    batch = [(tick, i, "x") for i in range(500)]  # a tick's facts: containers, most short-lived
    relation.update(batch[:50])
    scratch = [{"k": row} for row in batch]
    carried.append([tick, {"n": tick}])
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a
alive = weakref.ref(a)
del a, b
held = [[] for _ in range(5000)]  # allocations that trigger young collections
stats = gc.get_stats()
print(json.dumps({"policy": policy, "threshold": gc.get_threshold(), "full": stats[2]["collections"] - full_before,
                  "young": stats[0]["collections"], "cycle_freed": alive() is None}))
"""


def run_policy(env_value: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRODEPLOY_GC"}
    if env_value is not None:
        env["HYDRODEPLOY_GC"] = env_value
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_a_node_never_walks_its_long_lived_relations_but_frees_young_cycles() -> None:
    result = run_policy(None)
    assert result["policy"] == "young"
    assert result["full"] == 0  # the growing relation is never traversed by a full collection
    assert result["young"] > 0
    assert result["cycle_freed"] is True  # short-lived reference cycles are still collected


def test_the_python_default_can_be_kept_for_comparison() -> None:
    result = run_policy("python")
    assert result["policy"] == "python"
    assert result["full"] > 0  # CPython's defaults walk the growing set again and again
