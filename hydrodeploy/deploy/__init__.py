"""Hosts and deployments: starting, watching, limiting and stopping the processes of a run."""

from __future__ import annotations

from hydrodeploy.deploy.cluster import ClusterSpec, load_cluster, open_cluster
from hydrodeploy.deploy.deployment import Deployment, Member, ProcessFailure, python_module
from hydrodeploy.deploy.host import Cluster, DeployError, Host, ProcessHandle, ProcessSpec

__all__ = [
    "Cluster",
    "ClusterSpec",
    "DeployError",
    "Deployment",
    "Host",
    "Member",
    "ProcessFailure",
    "ProcessHandle",
    "ProcessSpec",
    "load_cluster",
    "open_cluster",
    "python_module",
]
