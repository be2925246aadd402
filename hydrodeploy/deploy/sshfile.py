"""SSH cluster files: the user's own machines, reached over SSH.

    name: lab
    kind: ssh
    known_hosts: ~/.ssh/known_hosts   # strict host-key checking against this file (the default)
    host_key_policy: strict           # or accept-new: unknown keys are added; changed keys refused
    user: ubuntu                      # defaults for every host (each host may override them)
    key: ~/.ssh/id_ed25519            # optional; the agent and ~/.ssh/config are honoured
    python: python3                   # the interpreter on the hosts
    workdir: ~/.hydrodeploy           # bundles/<sha256>/ and runs/<run id>/ live here
    machine: {vcpus: 4, price_per_hour: 0.19}
    clients: hosts                    # client processes on the hosts (after the nodes) or local
    control: direct                   # processes connect to the orchestrator (direct), or through
                                      # a reverse SSH tunnel to it (tunnel: the orchestrator may be
                                      # behind NAT; needs sshd's AllowTcpForwarding)
    hosts:
      - host: 10.0.0.2
        user: ubuntu
        port: 22
        key: ~/.ssh/id_ed25519
      - 10.0.0.3                      # just the host: every other key from the defaults
    ssh: {connect_timeout_s: 10, connect_retries: 3, max_startups: 10, max_sessions: 10}

Paths (``known_hosts``, ``key``, ``ssh_config``) may start with ``~`` and are otherwise relative to
the cluster file. Nothing is read or contacted while validating: the files are opened, and the
hosts reached, when the cluster is opened for a run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

HOST_PATTERN = r"^[A-Za-z0-9_.:\[\]%-]+$"


def resolve_path(value: str | None, info: ValidationInfo) -> str | None:
    """``~`` expanded; a relative path is taken relative to the cluster file."""
    if value is None:
        return None
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return expanded
    base: Path = (info.context or {}).get("base", Path.cwd())
    return str((base / expanded).resolve())


class MachineProfile(BaseModel):
    """What one machine is, for capacity plans: cores and list price."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vcpus: float | None = Field(default=None, gt=0, le=4096)
    price_per_hour: float | None = Field(default=None, ge=0)


class SshSettings(BaseModel):
    """Connection behaviour. The bounds follow sshd's defaults: ``MaxStartups 10:30:100`` (sshd
    drops unauthenticated connections beyond 10) and ``MaxSessions 10`` (channels per
    connection); raise them only as far as the hosts' sshd_config does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout_s: float = Field(default=10.0, gt=0, le=600)
    connect_retries: int = Field(default=3, ge=1, le=100)
    retry_backoff_s: float = Field(default=1.0, ge=0, le=60)
    max_startups: int = Field(default=10, ge=1, le=1000)
    max_sessions: int = Field(default=10, ge=1, le=1000)
    keepalive_s: float = Field(default=15.0, ge=0, le=3600)
    command_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    stop_grace_s: float = Field(default=3.0, ge=0, le=600)


class SshHostSpec(BaseModel):
    """One host; unset keys take the cluster file's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1, pattern=HOST_PATTERN)
    user: str | None = Field(default=None, min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    key: str | None = None
    address: str | None = Field(default=None, pattern=HOST_PATTERN)  # where nodes listen (default: the IP connected to)
    python: str | None = Field(default=None, min_length=1)
    workdir: str | None = Field(default=None, min_length=1)
    machine: MachineProfile | None = None

    @model_validator(mode="before")
    @classmethod
    def _plain_host(cls, value: Any) -> Any:
        return {"host": value} if isinstance(value, str) else value

    @field_validator("key")
    @classmethod
    def _path(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_path(value, info)


class SshClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["ssh"]
    hosts: list[SshHostSpec] = Field(min_length=1)
    known_hosts: str = "~/.ssh/known_hosts"
    host_key_policy: Literal["strict", "accept-new"] = "strict"
    ssh_config: str | None = "~/.ssh/config"  # read when it exists; null: not read
    agent: bool = True  # offer the keys of a running ssh-agent
    user: str | None = Field(default=None, min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    key: str | None = None
    python: str = Field(default="python3", min_length=1)
    workdir: str = Field(default="~/.hydrodeploy", min_length=1)
    machine: MachineProfile = MachineProfile()
    clients: Literal["hosts", "local"] = "hosts"
    control: Literal["direct", "tunnel"] = "direct"  # how processes reach the orchestrator's control port
    orchestrator_address: str | None = Field(default=None, pattern=HOST_PATTERN)
    ssh: SshSettings = SshSettings()

    @field_validator("known_hosts", "key", "ssh_config")
    @classmethod
    def _path(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_path(value, info)

    @field_validator("hosts")
    @classmethod
    def _distinct(cls, hosts: list[SshHostSpec]) -> list[SshHostSpec]:
        seen: set[tuple[str, int | None]] = set()
        for h in hosts:
            if (h.host, h.port) in seen:
                raise ValueError(f"host {h.host} is listed twice")
            seen.add((h.host, h.port))
        return hosts

    def describe(self) -> str:
        return f"{self.name} (ssh, {len(self.hosts)} hosts)"

    def profile(self, host: SshHostSpec) -> MachineProfile:
        """The host's machine profile, completed from the cluster's."""
        own = host.machine or MachineProfile()
        return MachineProfile(
            vcpus=own.vcpus if own.vcpus is not None else self.machine.vcpus,
            price_per_hour=own.price_per_hour if own.price_per_hour is not None else self.machine.price_per_hour,
        )
