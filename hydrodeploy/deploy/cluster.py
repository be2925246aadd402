"""Cluster files (``clusters/*.yaml``): where a deployment runs and what one machine is.

    name: local
    kind: local                # or ssh (deploy/sshfile.py), gcp (deploy/gcpfile.py)
    machine:
      cpus: 0.25               # each node's CPU quota in cores; null: unthrottled
      cfs_period_us: 10000     # CFS period of the quota (short: low jitter)
      pack: true               # pin throttled nodes to as few of this host's CPUs as hold their quotas
      price_per_hour: null     # for capacity plans
    network:
      namespaces: false        # one network namespace per machine, on a bridge
      delay_ms: 0              # tc netem delay on what each machine sends (implies namespaces)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hydrodeploy.deploy.gcpfile import GcpClusterSpec
from hydrodeploy.deploy.host import Cluster, Host
from hydrodeploy.deploy.local import LocalCluster
from hydrodeploy.deploy.sshfile import SshClusterSpec
from hydrodeploy.specfile import load_model, read_yaml

if TYPE_CHECKING:
    from hydrodeploy.deploy.gcp import GcpCluster


class MachineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: float | None = Field(default=None, gt=0, le=256)
    cfs_period_us: int = Field(default=10_000, ge=1_000, le=1_000_000)
    pack: bool = True  # local clusters: see hydrodeploy.deploy.local.pack_cpus
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


class RunClusters:
    """The clusters of a run that deploys several times in a row (``hydrodeploy analyze``: the
    calibration, then every iteration). GCP instances are created once, on the first
    deployment, kept between deployments and deleted by :meth:`close`; local and SSH clusters are
    opened for each deployment (cheap: SSH hosts keep the code bundle between them)."""

    def __init__(
        self, spec: AnyClusterSpec, run_dir: Path | None = None, create: Callable[[], GcpCluster] | None = None
    ) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self._create = create  # how the GCP cluster is created (tests: against recorded API answers)
        self._kept: GcpCluster | None = None  # created on the first deployment

    def deployment(self) -> Cluster:
        """A cluster for one deployment; closing it ends that deployment."""
        if not isinstance(self.spec, GcpClusterSpec):
            return open_cluster(self.spec, self.run_dir)
        if self._kept is None:
            if self._create is not None:
                self._kept = self._create()
            else:
                from hydrodeploy.deploy.gcp import GcpCluster

                self._kept = GcpCluster(self.spec, self.run_dir)
        return _OneDeployment(self._kept)

    def close(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            kept.close()


class _OneDeployment(Cluster):
    """One deployment on a kept cluster: closing it ends the deployment, not the cluster."""

    def __init__(self, kept: GcpCluster) -> None:
        self.kept = kept
        self.name = kept.name
        self.warnings: list[str] = []

    def hosts(self, nodes: Sequence[str], client_processes: int) -> tuple[dict[str, Host], list[Host]]:
        return self.kept.hosts(nodes, client_processes)

    def orchestrator_address(self) -> str:
        return self.kept.orchestrator_address()

    def close(self) -> None:
        before = len(self.kept.warnings)
        try:
            self.kept.end_deployment()
        finally:
            self.warnings.extend(self.kept.warnings[before:])  # what ending this deployment ran into


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
        pack=spec.machine.pack,
    )
