"""Removing what a run left behind (``hydrodeploy teardown [RUN_DIR]``).

An SSH or GCP run records what it set up in ``RUN_DIR/cluster.json`` before starting anything
(the hosts, their remote run directories, the run id its GCP instances are labelled with) and
marks it ``closed`` once it has cleaned up. Tearing down reads that record and undoes it:
processes of the run still running on the hosts are stopped (SIGTERM to their process groups,
SIGKILL after the grace period) and their directories removed; GCP instances labelled with the
run id are deleted. It is safe to repeat. A local run leaves nothing that outlives its
orchestrator except cgroups and namespaces, which are removed for every orchestrator that is gone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hydrodeploy.deploy.host import DeployError

STATE_FILE = "cluster.json"


class TeardownError(DeployError):
    """A run directory that says nothing about what to tear down."""


def teardown(run_dir: Path) -> list[str]:
    """Undo what the run of ``run_dir`` set up; one line per thing done."""
    if not run_dir.is_dir():
        raise TeardownError(f"{run_dir}: no such run directory")
    path = run_dir / STATE_FILE
    if not path.is_file():
        if (run_dir / "spec.yaml").is_file():
            from hydrodeploy.deploy.local import clean_stale

            clean_stale()
            return [
                f"{run_dir.name}: a local run (no {STATE_FILE}): its processes died with it; removed the cgroups and "
                f"namespaces of orchestrators that are gone"
            ]
        raise TeardownError(f"{run_dir}: not a run directory (no spec.yaml, no {STATE_FILE})")
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TeardownError(f"{path}: cannot read: {exc}") from None
    kind = state.get("kind")
    if kind == "ssh":
        from hydrodeploy.deploy.ssh import teardown_ssh

        lines = teardown_ssh(state)
    elif kind == "gcp":
        from hydrodeploy.deploy.gcp import teardown_gcp

        lines = teardown_gcp(state)
    else:
        raise TeardownError(f"{path}: unknown cluster kind {kind!r}")
    state["status"] = "torn down"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)
    return lines
