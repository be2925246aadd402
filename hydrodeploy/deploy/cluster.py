"""Cluster files (``clusters/*.yaml``): where a deployment runs and what one machine is.

    name: local
    kind: local                # or ssh (deploy/sshfile.py), gcp (deploy/gcpfile.py)
    machine:
      cpus: 0.25               # each node's CPU quota in cores; null: unthrottled
      cfs_period_us: 10000     # CFS period of the quota (short: low jitter)
      price_per_hour: null     # for capacity plans
    network:
      namespaces: false        # one network namespace per machine, on a bridge
      delay_ms: 0              # tc netem delay on what each machine sends (implies namespaces)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hydrodeploy.deploy.gcpfile import GcpClusterSpec
from hydrodeploy.deploy.host import Cluster
from hydrodeploy.deploy.local import LocalCluster
from hydrodeploy.deploy.sshfile import SshClusterSpec
from hydrodeploy.specfile import load_model, read_yaml


class MachineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: float | None = Field(default=None, gt=0, le=256)
    cfs_period_us: int = Field(default=10_000, ge=1_000, le=1_000_000)
    price_per_hour: float | None = Field(default=None, ge=0)


class NetworkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: bool = False
    delay_ms: float = Field(default=0.0, ge=0, le=10_000)


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["local"] = "local"
    machine: MachineSpec = MachineSpec()
    network: NetworkSpec = NetworkSpec()

    def describe(self) -> str:
        cpus = "unthrottled" if self.machine.cpus is None else f"cpus {self.machine.cpus:g} per node"
        net = ""
        if self.network.namespaces or self.network.delay_ms:
            net = f", namespaces, {self.network.delay_ms:g} ms delay"
        return f"{self.name} ({self.kind}, {cpus}{net})"


LOCAL_DEFAULT = ClusterSpec(name="local", machine=MachineSpec(cpus=0.25))
"""The cluster of a run that names none: the same as the shipped ``clusters/local.yaml``."""


AnyClusterSpec = ClusterSpec | SshClusterSpec | GcpClusterSpec


class _Kind(BaseModel):
    kind: Literal["local", "ssh", "gcp"] = "local"


def load_cluster(path: str | Path) -> AnyClusterSpec:
    """A cluster file, validated by the model of its ``kind``."""
    data = read_yaml(path)[0]
    kind = data.get("kind", "local") if isinstance(data, dict) else "local"
    context: dict[str, Any] = {"base": Path(path).resolve().parent}
    if kind == "ssh":
        return load_model(path, SshClusterSpec, context=context)
    if kind == "gcp":
        return load_model(path, GcpClusterSpec, context=context)
    if kind != "local":
        load_model(path, _Kind)  # names the kinds there are, pointing at the wrong one
    return load_model(path, ClusterSpec)


def open_cluster(spec: AnyClusterSpec, run_dir: Path | None = None) -> Cluster:
    """Set up the cluster a spec describes (the caller must :meth:`~Cluster.close` it). SSH and
    GCP clusters record what they set up in ``run_dir/cluster.json`` (for ``hydrodeploy
    teardown``)."""
    if isinstance(spec, SshClusterSpec):
        from hydrodeploy.deploy.ssh import SshCluster

        return SshCluster(spec, run_dir)
    if isinstance(spec, GcpClusterSpec):
        from hydrodeploy.deploy.gcp import GcpCluster

        return GcpCluster(spec, run_dir)
    return LocalCluster(
        name=spec.name,
        cpus=spec.machine.cpus,
        cfs_period_us=spec.machine.cfs_period_us,
        namespaces=spec.network.namespaces,
        delay_ms=spec.network.delay_ms,
    )
