"""The GCP backend: Compute Engine instances created for a run, used as SSH hosts, deleted after.

Opening a :class:`GcpCluster`

1. records the run in ``<run dir>/cluster.json`` (project, zone, run id, instance names, price)
   before creating anything, so that ``hydrodeploy teardown`` can always find what to delete;
2. inserts ``machines`` instances (``machine_type``, ``image``, ``zone`` from the cluster file)
   labelled ``hydrodeploy-run=<run id>``, each insert with a request id derived from the run id
   and the instance name, so that an insert retried after a timeout or a 5xx is not done twice;
   their metadata carries a startup script (:data:`STARTUP_SCRIPT`: installs python3 and perf,
   sets ``kernel.perf_event_paranoid=-1`` and ``kernel.kptr_restrict=0`` so that nodes can be
   profiled, then marks the machine ready), the user's public key (``ssh-keys``) and
   ``enable-guest-attributes`` (the guest agent then publishes the SSH host keys);
3. waits for the insert operations, reads each instance's address, and its host keys from the
   guest attributes through the authenticated API into the run's ``known_hosts`` (so SSH host
   keys are checked from the first connection), waits until the startup script is done, and
   opens an :class:`~hydrodeploy.deploy.ssh.SshCluster` on the instances.

A run of several deployments (``hydrodeploy analyze``) ends each one with
:meth:`GcpCluster.end_deployment` (the SSH cluster closed: processes stopped, files fetched,
remote run directories removed) and deploys the next on the same instances. Closing closes the
SSH cluster and deletes every instance labelled with the run id (also with request ids). The cost per hour (instances x price) is recorded in
``cluster.json``.

Tests drive this code against recorded API responses through the real client library with a
replaying HTTP session (:mod:`hydrodeploy.testing.gcp`), never the network.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydrodeploy.deploy.gcpfile import GcpClusterSpec
from hydrodeploy.deploy.host import Cluster, DeployError, Host
from hydrodeploy.deploy.ssh import (
    HostKeyRefused,
    SshCluster,
    connect,
    fingerprint,
    new_run_id,
    resolve_targets,
)
from hydrodeploy.deploy.sshfile import SshClusterSpec
from hydrodeploy.deploy.teardown import STATE_FILE

RUN_LABEL = "hydrodeploy-run"
READY_FILE = "/var/lib/hydrodeploy/ready"
REQUEST_NAMESPACE = uuid.UUID("9b1f0c0e-4a53-4bd8-9e0a-5d1f1f3c2a77")
RETRIES = 5

STARTUP_SCRIPT = f"""#!/bin/sh
# hydrodeploy: make this machine a host for node processes (python3, perf, profiling allowed).
set -u
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q python3 linux-perf || apt-get install -y -q python3 "linux-tools-$(uname -r)" || apt-get install -y -q python3
elif command -v dnf >/dev/null 2>&1; then
  dnf install -y python3 perf
elif command -v yum >/dev/null 2>&1; then
  yum install -y python3 perf
fi
cat > /etc/sysctl.d/60-hydrodeploy-profiling.conf <<'EOF'
kernel.perf_event_paranoid = -1
kernel.kptr_restrict = 0
EOF
sysctl -q -p /etc/sysctl.d/60-hydrodeploy-profiling.conf
mkdir -p {os.path.dirname(READY_FILE)}
touch {READY_FILE}
"""


class GcpError(DeployError):
    """Compute Engine refused or failed a request."""


def request_id(run_id: str, instance: str, action: str) -> str:
    """The same UUID every time the same action on the same instance of the same run is asked
    (Compute Engine ignores a request whose id it has seen in the last 30 minutes)."""
    return str(uuid.uuid5(REQUEST_NAMESPACE, f"{run_id}/{instance}/{action}"))


def instance_names(spec: GcpClusterSpec, run_id: str) -> list[str]:
    stamp = run_id.replace("-", "")[:14]  # YYYYmmddHHMMSS
    tail = run_id.rsplit("-", 1)[-1]
    return [f"{spec.name_prefix}-{stamp}-{tail}-{i}" for i in range(spec.machines)]


@dataclass
class Compute:
    """The Compute Engine clients the backend uses (the tests pass ones whose HTTP session
    replays recorded responses)."""

    instances: Any  # compute_v1.InstancesClient
    operations: Any  # compute_v1.ZoneOperationsClient

    @staticmethod
    def default() -> Compute:
        try:
            from google.auth.exceptions import DefaultCredentialsError
            from google.cloud import compute_v1
        except ImportError:
            raise DeployError("the GCP backend needs google-cloud-compute: pip install 'hydrodeploy[gcp]'") from None
        try:
            return Compute(compute_v1.InstancesClient(), compute_v1.ZoneOperationsClient())
        except DefaultCredentialsError as exc:
            raise DeployError(f"no Google Cloud credentials ({exc}); run `gcloud auth application-default login`") from None


def _retrying(what: str, call: Callable[[], Any], sleep: Callable[[float], None] = time.sleep) -> Any:
    """``call()``, retried on transient errors (the request ids make retried inserts and deletes
    idempotent)."""
    from google.api_core import exceptions as gexc

    transient = (gexc.ServiceUnavailable, gexc.InternalServerError, gexc.TooManyRequests, gexc.DeadlineExceeded, ConnectionError)
    for attempt in range(RETRIES):
        try:
            return call()
        except transient as exc:
            if attempt == RETRIES - 1:
                raise GcpError(f"{what}: {exc}") from None
            sleep(min(8.0, 0.5 * 2**attempt))
        except gexc.GoogleAPICallError as exc:
            raise GcpError(f"{what}: {exc}") from None
    raise AssertionError("unreachable")


def _public_key(spec: GcpClusterSpec) -> str:
    pub = Path(spec.key + ".pub")
    try:
        fields = pub.read_text().split()
    except OSError:
        raise DeployError(f"no public key {pub} (the instances are given the public half of key: {spec.key})") from None
    return f"{spec.user}:{fields[0]} {fields[1]} {spec.user}"


def instance_resource(spec: GcpClusterSpec, name: str, run_id: str) -> Any:
    from google.cloud import compute_v1

    interface = compute_v1.NetworkInterface(network=spec.network)
    if spec.subnetwork:
        interface.subnetwork = spec.subnetwork
    if spec.external_ip:
        interface.access_configs = [compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
    metadata = {"startup-script": STARTUP_SCRIPT, "ssh-keys": _public_key(spec), "enable-guest-attributes": "TRUE"}
    return compute_v1.Instance(
        name=name,
        machine_type=f"zones/{spec.zone}/machineTypes/{spec.machine_type}",
        labels={**spec.labels, RUN_LABEL: run_id},
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(source_image=spec.image, disk_size_gb=spec.disk_gb),
            )
        ],
        network_interfaces=[interface],
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key=k, value=v) for k, v in metadata.items()]),
    )


@dataclass
class Created:
    name: str
    address: str  # what SSH connects to
    internal: str  # where nodes listen (reachable from the other instances)
    host_keys: list[tuple[str, str]]  # (type, base64)


class Provisioner:
    """Creates and deletes the instances of one run."""

    def __init__(self, spec: GcpClusterSpec, run_id: str, compute: Compute, sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec = spec
        self.run_id = run_id
        self.compute = compute
        self.sleep = sleep
        self.names = instance_names(spec, run_id)

    def _wait(self, operation: Any, what: str) -> None:
        deadline = time.monotonic() + self.spec.operation_timeout_s
        while str(operation.status.name if hasattr(operation.status, "name") else operation.status) != "DONE":
            if time.monotonic() > deadline:
                raise GcpError(f"{what}: not done after {self.spec.operation_timeout_s:g} s")
            wait = functools.partial(self.compute.operations.wait, project=self.spec.project, zone=self.spec.zone, operation=operation.name)
            operation = _retrying(what, wait, self.sleep)
        if operation.error and operation.error.errors:
            errors = "; ".join(f"{e.code}: {e.message}" for e in operation.error.errors)
            raise GcpError(f"{what}: {errors}")

    def create(self) -> list[Created]:
        spec = self.spec
        operations = []
        for name in self.names:
            resource = instance_resource(spec, name, self.run_id)
            rid = request_id(self.run_id, name, "insert")
            request = {"project": spec.project, "zone": spec.zone, "instance_resource": resource, "request_id": rid}
            op = _retrying(f"creating instance {name}", functools.partial(self.compute.instances.insert_unary, request=request), self.sleep)
            operations.append((name, op))
        for name, op in operations:
            self._wait(op, f"creating instance {name}")
        return [self._describe(name) for name in self.names]

    def _describe(self, name: str) -> Created:
        spec = self.spec
        get = functools.partial(self.compute.instances.get, project=spec.project, zone=spec.zone, instance=name)
        instance = _retrying(f"reading instance {name}", get, self.sleep)
        interface = instance.network_interfaces[0]
        internal = interface.network_i_p
        external = next((a.nat_i_p for a in interface.access_configs if a.nat_i_p), "")
        address = external if spec.external_ip and external else internal
        keys = self._host_keys(name) if spec.host_key_policy == "guest-attributes" else []
        return Created(name, address, internal, keys)

    def _host_keys(self, name: str) -> list[tuple[str, str]]:
        """The instance's SSH host keys as its guest agent published them."""
        from google.api_core import exceptions as gexc

        spec = self.spec
        deadline = time.monotonic() + spec.startup_timeout_s
        while True:
            try:
                request = {"project": spec.project, "zone": spec.zone, "instance": name, "query_path": "hostkeys/"}
                attrs = self.compute.instances.get_guest_attributes(request=request)
                items = [(i.key, i.value) for i in attrs.query_value.items if i.namespace == "hostkeys"]
                if items:
                    return items
            except gexc.NotFound:
                pass  # the guest agent has not published them yet
            except gexc.GoogleAPICallError as exc:
                raise GcpError(f"reading the host keys of {name}: {exc}") from None
            if time.monotonic() > deadline:
                raise GcpError(f"instance {name} published no SSH host keys within {spec.startup_timeout_s:g} s (guest attributes hostkeys/)")
            self.sleep(5.0)

    def labelled(self) -> list[str]:
        """Names of every instance in the zone labelled with the run id."""
        spec = self.spec
        request = {"project": spec.project, "zone": spec.zone, "filter": f'labels.{RUN_LABEL}="{self.run_id}"'}
        pager = _retrying("listing the run's instances", functools.partial(self.compute.instances.list, request=request), self.sleep)
        return sorted(i.name for i in pager)

    def delete(self) -> list[str]:
        """Delete every instance labelled with the run id; their names."""
        spec = self.spec
        names = self.labelled()
        operations = []
        for name in names:
            rid = request_id(self.run_id, name, "delete")
            request = {"project": spec.project, "zone": spec.zone, "instance": name, "request_id": rid}
            op = _retrying(f"deleting instance {name}", functools.partial(self.compute.instances.delete_unary, request=request), self.sleep)
            operations.append((name, op))
        for name, op in operations:
            self._wait(op, f"deleting instance {name}")
        return names


def write_known_hosts(path: Path, created: list[Created]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{c.address} {kind} {value}\n" for c in created for kind, value in c.host_keys]
    path.write_text("".join(lines))
    path.chmod(0o600)


def ssh_spec(spec: GcpClusterSpec, created: list[Created], known_hosts: Path) -> SshClusterSpec:
    """The SSH cluster the instances make: connect to their (external) addresses, nodes listen
    on their internal ones."""
    machine = {"vcpus": spec.instance_vcpus(), "price_per_hour": spec.instance_price()}
    return SshClusterSpec.model_validate(
        {
            "name": spec.name,
            "kind": "ssh",
            "hosts": [{"host": c.address, "address": c.internal, "machine": machine} for c in created],
            "known_hosts": str(known_hosts),
            "host_key_policy": "accept-new" if spec.host_key_policy == "accept-new" else "strict",
            "ssh_config": None,
            "user": spec.user,
            "key": spec.key,
            "clients": spec.clients,
            "control": spec.control,
            "ssh": spec.ssh.model_dump(),
        }
    )


def wait_ready(ssh: SshClusterSpec, timeout: float, sleep: Callable[[float], None] = time.sleep) -> None:
    """Until every instance accepts SSH and its startup script has finished."""
    from hydrodeploy.deploy.ssh import KnownHosts, _exec

    known = KnownHosts(ssh.known_hosts, ssh.host_key_policy == "accept-new")
    deadline = time.monotonic() + timeout
    for target in resolve_targets(ssh):
        while True:
            try:
                client = connect(target, ssh.ssh, known, ssh.agent, threading.Semaphore(1))
                try:
                    status, _, _ = _exec(client, ["test", "-f", READY_FILE], b"", ssh.ssh.command_timeout_s)
                finally:
                    client.close()
                if status == 0:
                    break
            except HostKeyRefused:
                raise  # never waited out: the keys come from the API
            except DeployError:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise GcpError(f"instance {target.label}: the startup script did not finish within {timeout:g} s")
            sleep(5.0)


class GcpCluster(Cluster):
    """Instances created for the run (see the module docstring)."""

    def __init__(
        self,
        spec: GcpClusterSpec,
        run_dir: Path | None = None,
        compute: Compute | None = None,
        run_id: str | None = None,
        open_ssh: Callable[[SshClusterSpec, Path | None, str, dict[str, Any]], Cluster] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.warnings: list[str] = []
        self.run_id = run_id or new_run_id()
        self.run_dir = run_dir
        self.provisioner = Provisioner(spec, self.run_id, compute or Compute.default(), sleep)
        self.ssh: Cluster | None = None
        self.created: list[Created] = []
        self.deleted: list[str] = []
        self._closed = False
        try:
            self._write_state("creating")
            self.created = self.provisioner.create()
            known = Path(spec.known_hosts) if spec.known_hosts else (run_dir or Path.cwd()) / "known_hosts"
            if spec.host_key_policy == "guest-attributes":
                write_known_hosts(known, self.created)
            self._write_state("created")
            self._sspec = ssh_spec(spec, self.created, known)
            self._open_ssh = open_ssh
            if open_ssh is None:
                wait_ready(self._sspec, spec.startup_timeout_s)
            self._session()
        except BaseException:
            self.close()
            raise

    def _session(self) -> Cluster:
        """The SSH cluster over the instances for the current deployment (opened on first use)."""
        if self.ssh is None:
            if self._closed:
                raise DeployError(f"cluster {self.name}: used after it was closed")
            if self._open_ssh is None:
                self.ssh = SshCluster(self._sspec, self.run_dir, self.run_id, self.state("open"))
            else:
                self.ssh = self._open_ssh(self._sspec, self.run_dir, self.run_id, self.state("open"))
        return self.ssh

    def end_deployment(self) -> None:
        """End the current deployment but keep the instances for the next one: its processes are
        stopped, its files fetched and the hosts' run directories removed (the SSH cluster's
        close); the next :meth:`hosts` opens a new SSH session on the same instances, with the
        host keys already checked. ``hydrodeploy analyze`` measures every iteration this way
        instead of creating the instances again."""
        ssh, self.ssh = self.ssh, None
        if ssh is not None:
            try:
                ssh.close()
            finally:
                self.warnings.extend(ssh.warnings)
                self._write_state("kept")

    # ---- Cluster ----------------------------------------------------------------------------------

    def hosts(self, nodes: Any, client_processes: int) -> tuple[dict[str, Host], list[Host]]:
        return self._session().hosts(nodes, client_processes)

    def orchestrator_address(self) -> str:
        return self._session().orchestrator_address()

    def cost_per_hour(self) -> float | None:
        price = self.spec.instance_price()
        return None if price is None else price * self.spec.machines

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.ssh is not None:
                self.ssh.close()
        finally:
            self._write_state("deleting")
            self.deleted = self.provisioner.delete()
            self._write_state("closed")

    # ---- the state file ---------------------------------------------------------------------------

    def state(self, status: str) -> dict[str, Any]:
        spec = self.spec
        return {
            "kind": "gcp",
            "status": status,
            "run_id": self.run_id,
            "gcp_spec": spec.model_dump(),
            "project": spec.project,
            "zone": spec.zone,
            "machine_type": spec.machine_type,
            "label": f"{RUN_LABEL}={self.run_id}",
            "instances": [
                {"name": c.name, "address": c.address, "internal": c.internal, "host_keys": [f"{k} {_fp(k, v)}" for k, v in c.host_keys]}
                for c in self.created
            ]
            or [{"name": n} for n in self.provisioner.names],
            "deleted": self.deleted,
            "price_per_hour": spec.instance_price(),
            "price_source": "cluster file" if spec.price_per_hour is not None else "built-in on-demand list price (us-central1)",
            "cost_per_hour": self.cost_per_hour(),
        }

    def _write_state(self, status: str) -> None:
        if self.run_dir is None:
            return
        path = self.run_dir / STATE_FILE
        state = self.state(status)
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads(path.read_text())
            if previous.get("kind") == "gcp" and "hosts" in previous:
                state = {**previous, **state}  # keep what the SSH cluster recorded
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, path)


def _fp(kind: str, value: str) -> str:
    import base64

    import paramiko

    try:
        key = paramiko.PKey.from_type_string(kind, base64.b64decode(value))
    except Exception:
        return "(fingerprint unavailable)"
    return fingerprint(key)


def teardown_gcp(state: dict[str, Any], compute: Compute | None = None) -> list[str]:
    """Delete every instance labelled with the run id of ``state`` (a run's cluster.json)."""
    spec = GcpClusterSpec.model_validate(state["gcp_spec"])
    provisioner = Provisioner(spec, str(state["run_id"]), compute or Compute.default())
    deleted = provisioner.delete()
    if not deleted:
        return [f"no instance labelled {RUN_LABEL}={state['run_id']} in {spec.project}/{spec.zone}"]
    return [f"deleted instance {name} ({spec.project}/{spec.zone})" for name in deleted]
