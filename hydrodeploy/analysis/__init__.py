"""Static analyses of `.ded` programs, each a pure function returning a frozen result.

They decide the preconditions of the rewrites of Chu et al.'s technical report:

| module | what | TR |
| --- | --- | --- |
| :mod:`.context` | EDB / IDB / static relations of a component | §2.2-2.4 |
| :mod:`.references` | references, inputs, outputs of rule sets; rule closures and clusters | §2.4 |
| :mod:`.independence` | (mutual) independence of two rule sets | §3.1 |
| :mod:`.monotonicity` | monotonicity, with the relaxed tests | §3.2, A.2.1 |
| :mod:`.functional` | functional components | §3.3 |
| :mod:`.state_machine` | existence and no-change dependencies | A.4, A.4.1 |
| :mod:`.dependencies` | functional and co-partition dependencies | §4.2, B.2.1 |
| :mod:`.policies` | distribution policies (co-hashing, dependencies) | §4.1-4.2, B.1-B.2 |
"""

from __future__ import annotations

from hydrodeploy.analysis.context import ComponentContext, context
from hydrodeploy.analysis.dependencies import (
    CD,
    FD,
    co_partition_dependencies,
    functional_dependencies,
)
from hydrodeploy.analysis.functional import Functional, functional
from hydrodeploy.analysis.independence import (
    Independence,
    MutualIndependence,
    independence,
    mutual_independence,
)
from hydrodeploy.analysis.monotonicity import Monotonicity, monotonicity
from hydrodeploy.analysis.policies import PartitionExpr, Policy, PolicySearch, find_policy
from hydrodeploy.analysis.references import (
    References,
    clusters,
    downstream_closure,
    references,
    upstream_closure,
)
from hydrodeploy.analysis.state_machine import StateMachine, state_machine

__all__ = [
    "CD",
    "FD",
    "ComponentContext",
    "Functional",
    "Independence",
    "Monotonicity",
    "MutualIndependence",
    "PartitionExpr",
    "Policy",
    "PolicySearch",
    "References",
    "StateMachine",
    "clusters",
    "co_partition_dependencies",
    "context",
    "downstream_closure",
    "find_policy",
    "functional",
    "functional_dependencies",
    "independence",
    "monotonicity",
    "mutual_independence",
    "references",
    "state_machine",
    "upstream_closure",
]
