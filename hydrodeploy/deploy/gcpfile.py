"""GCP cluster files: VMs created for a run on Compute Engine and deleted after it.

    name: gcp
    kind: gcp
    project: my-project
    zone: us-central1-a
    machine_type: n2-standard-4
    image: projects/debian-cloud/global/images/family/debian-12
    machines: 4                      # instances to create
    user: hydrodeploy                # the SSH user created on them
    key: ~/.ssh/id_ed25519           # its .pub is put in the instances' ssh-keys metadata
    price_per_hour: null             # per instance; null: the built-in list price of machine_type

Credentials are Google's application default credentials (``gcloud auth application-default
login``, or ``GOOGLE_APPLICATION_CREDENTIALS``). Host keys are read from the instances' guest
attributes through the authenticated API (``host_key_policy: guest-attributes``, the default),
so that the first SSH connection is already checked.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from hydrodeploy.deploy.sshfile import SshSettings, resolve_path

LIST_PRICES = {"n2-standard-4": 0.194236}
"""On-demand list price in US dollars per hour, us-central1 (cloud.google.com/compute/vm-instance-pricing);
a default only: set ``price_per_hour`` for other regions, discounts or types."""

LABEL = r"^[a-z][a-z0-9_-]{0,62}$"


class GcpClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["gcp"]
    project: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9:.-]*$")
    zone: str = Field(min_length=1, pattern=r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
    machine_type: str = Field(default="n2-standard-4", pattern=r"^[a-z0-9-]+$")
    image: str = "projects/debian-cloud/global/images/family/debian-12"
    machines: int = Field(default=4, ge=1, le=500)
    disk_gb: int = Field(default=20, ge=10, le=65536)
    network: str = "global/networks/default"
    subnetwork: str | None = None
    external_ip: bool = True  # reach the VMs at external addresses (false: from inside the VPC)
    name_prefix: str = Field(default="hydrodeploy", pattern=r"^[a-z][a-z0-9-]{0,30}$")
    labels: dict[str, str] = Field(default_factory=dict)
    user: str = Field(default="hydrodeploy", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    key: str = "~/.ssh/id_ed25519"
    known_hosts: str | None = None  # default: <run dir>/known_hosts, filled from guest attributes
    host_key_policy: Literal["guest-attributes", "accept-new"] = "guest-attributes"
    price_per_hour: float | None = Field(default=None, ge=0)
    vcpus: float | None = Field(default=None, gt=0)
    startup_timeout_s: float = Field(default=600.0, gt=0, le=7200)
    operation_timeout_s: float = Field(default=300.0, gt=0, le=3600)
    clients: Literal["hosts", "local"] = "hosts"
    control: Literal["direct", "tunnel"] = "tunnel"  # the orchestrator need not be reachable from the VMs
    ssh: SshSettings = SshSettings()

    @field_validator("key", "known_hosts")
    @classmethod
    def _path(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_path(value, info)

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            if not re.match(LABEL, key) or not re.match(r"^[a-z0-9_-]{0,63}$", value):
                raise ValueError(f"label {key}={value}: keys and values are lower-case letters, digits, _ and - (keys start with a letter)")
        return labels

    def instance_price(self) -> float | None:
        return self.price_per_hour if self.price_per_hour is not None else LIST_PRICES.get(self.machine_type)

    def instance_vcpus(self) -> float | None:
        if self.vcpus is not None:
            return self.vcpus
        found = re.match(r"^[a-z0-9]+-(standard|highmem|highcpu)-(\d+)$", self.machine_type)
        return float(found.group(2)) if found else None

    def describe(self) -> str:
        price = self.instance_price()
        cost = f", ${price * self.machines:.2f}/h" if price is not None else ""
        return f"{self.name} (gcp, {self.machines} x {self.machine_type} in {self.zone}{cost})"
