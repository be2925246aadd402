"""The GCP backend against recorded Compute Engine responses (tests/gcp_recordings/), through the
real google-cloud-compute clients with a FAKE HTTP adapter (hydrodeploy.testing.gcp): never the
network. What the requests carry (labels, startup script, keys, idempotent request ids) and what
the backend makes of the answers (addresses, host keys, retries, teardown by label)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import paramiko
import pytest

from hydrodeploy.deploy.gcp import (
    RUN_LABEL,
    STARTUP_SCRIPT,
    GcpError,
    Provisioner,
    instance_names,
    request_id,
    ssh_spec,
    teardown_gcp,
    write_known_hosts,
)
from hydrodeploy.deploy.gcpfile import GcpClusterSpec
from hydrodeploy.deploy.ssh import fingerprint
from hydrodeploy.testing.gcp import fake_compute, load_recording
from hydrodeploy.testing.sshd import keygen

RECORDINGS = Path(__file__).resolve().parent / "gcp_recordings"
RUN_ID = "20240502-101503-4242-a1b2c3"


def make_spec(tmp: Path, **extra: Any) -> GcpClusterSpec:
    if not (tmp / "user_key").exists():
        keygen(tmp / "user_key", "gcp-test")
    fields: dict[str, Any] = {
        "name": "g",
        "kind": "gcp",
        "project": "demo-project",
        "zone": "us-central1-a",
        "machines": 2,
        "key": str(tmp / "user_key"),
        "labels": {"team": "storage"},
    }
    fields.update(extra)
    return GcpClusterSpec.model_validate(fields)


def values(spec: GcpClusterSpec, addresses: list[str], internal: list[str], host_keys: list[str]) -> dict[str, str]:
    out = {"RUN_ID": RUN_ID}
    for i, name in enumerate(instance_names(spec, RUN_ID)):
        out[f"NAME_{i}"] = name
        out[f"INSERT_ID_{i}"] = request_id(RUN_ID, name, "insert")
        out[f"DELETE_ID_{i}"] = request_id(RUN_ID, name, "delete")
        out[f"ADDRESS_{i}"] = addresses[i]
        out[f"INTERNAL_{i}"] = internal[i]
        out[f"HOSTKEY_{i}"] = host_keys[i]
    return out


def host_key(tmp: Path, i: int) -> paramiko.PKey:
    keygen(tmp / f"host{i}", f"host{i}")
    return paramiko.Ed25519Key.from_private_key_file(str(tmp / f"host{i}"))


def test_request_ids_are_stable_per_run_instance_and_action() -> None:
    a = request_id(RUN_ID, "n-0", "insert")
    assert a == request_id(RUN_ID, "n-0", "insert")
    assert len({a, request_id(RUN_ID, "n-1", "insert"), request_id(RUN_ID, "n-0", "delete"), request_id("other", "n-0", "insert")}) == 4


def test_instance_names_are_valid_and_carry_the_run() -> None:
    spec = GcpClusterSpec.model_validate({"name": "g", "kind": "gcp", "project": "p", "zone": "us-central1-a", "machines": 3})
    names = instance_names(spec, RUN_ID)
    assert names == ["hydrodeploy-20240502101503-a1b2c3-0", "hydrodeploy-20240502101503-a1b2c3-1", "hydrodeploy-20240502101503-a1b2c3-2"]
    assert all(len(n) <= 63 for n in names)


def test_create_and_delete_against_recorded_responses(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    keys = [host_key(tmp_path, 0), host_key(tmp_path, 1)]
    recording = load_recording(
        RECORDINGS / "run_two_instances.json",
        values(spec, ["203.0.113.10", "203.0.113.11"], ["10.128.0.5", "10.128.0.6"], [k.get_base64() for k in keys]),
    )
    compute, adapter = fake_compute(recording)
    slept: list[float] = []
    provisioner = Provisioner(spec, RUN_ID, compute, sleep=slept.append)
    created = provisioner.create()

    names = instance_names(spec, RUN_ID)
    assert [c.name for c in created] == names
    assert [(c.address, c.internal) for c in created] == [("203.0.113.10", "10.128.0.5"), ("203.0.113.11", "10.128.0.6")]
    assert [c.host_keys for c in created] == [[("ssh-ed25519", k.get_base64())] for k in keys]

    inserts = adapter.of("POST", "/instances")
    assert len(inserts) == 3  # the first one got a 503 and was retried ...
    assert inserts[0]["params"]["requestId"] == inserts[1]["params"]["requestId"] == request_id(RUN_ID, names[0], "insert")
    assert inserts[2]["params"]["requestId"] == request_id(RUN_ID, names[1], "insert")  # ... with the same request id
    body = inserts[1]["body"]
    assert body["name"] == names[0]
    assert body["machineType"] == "zones/us-central1-a/machineTypes/n2-standard-4"
    assert body["labels"] == {"team": "storage", RUN_LABEL: RUN_ID}
    assert body["disks"][0]["boot"] and body["disks"][0]["autoDelete"]
    assert body["disks"][0]["initializeParams"]["sourceImage"] == "projects/debian-cloud/global/images/family/debian-12"
    assert body["networkInterfaces"][0]["accessConfigs"][0]["type"] == "ONE_TO_ONE_NAT"
    metadata = {item["key"]: item["value"] for item in body["metadata"]["items"]}
    assert metadata["startup-script"] == STARTUP_SCRIPT
    assert "kernel.perf_event_paranoid = -1" in STARTUP_SCRIPT and "linux-perf" in STARTUP_SCRIPT and "python3" in STARTUP_SCRIPT
    assert metadata["enable-guest-attributes"] == "TRUE"
    pub = (tmp_path / "user_key.pub").read_text().split()
    assert metadata["ssh-keys"] == f"hydrodeploy:{pub[0]} {pub[1]} hydrodeploy"
    assert "PRIVATE" not in str(body)  # only the public half of the key travels
    assert len(adapter.of("POST", "/wait")) == 3  # one operation needed asking twice
    assert slept  # the 503 and the unpublished host keys were waited out (no real sleeping here)

    known = tmp_path / "known_hosts"
    write_known_hosts(known, created)
    host_keys = paramiko.HostKeys(str(known))
    assert host_keys.lookup("203.0.113.11")["ssh-ed25519"] == keys[1]  # type: ignore[index]
    sspec = ssh_spec(spec, created, known)
    assert [(h.host, h.address) for h in sspec.hosts] == [("203.0.113.10", "10.128.0.5"), ("203.0.113.11", "10.128.0.6")]
    assert sspec.host_key_policy == "strict" and sspec.user == "hydrodeploy"
    assert sspec.profile(sspec.hosts[0]).vcpus == 4 and sspec.profile(sspec.hosts[0]).price_per_hour == pytest.approx(0.194236)

    assert provisioner.delete() == names
    deletes = adapter.of("DELETE")
    assert [d["params"]["requestId"] for d in deletes] == [request_id(RUN_ID, n, "delete") for n in names]
    listing = adapter.of("GET", "/instances")
    assert listing[-1]["params"]["filter"] == f'labels.{RUN_LABEL}="{RUN_ID}"'
    assert adapter.pending == []  # every recorded exchange was used


def test_teardown_deletes_by_label_and_is_safe_to_repeat(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    recording = load_recording(RECORDINGS / "teardown_by_label.json", values(spec, ["", ""], ["", ""], ["", ""]))
    compute, adapter = fake_compute(recording)
    state = {"kind": "gcp", "run_id": RUN_ID, "gcp_spec": spec.model_dump()}
    name = instance_names(spec, RUN_ID)[1]
    assert teardown_gcp(state, compute) == [f"deleted instance {name} (demo-project/us-central1-a)"]
    assert teardown_gcp(state, compute) == [f"no instance labelled {RUN_LABEL}={RUN_ID} in demo-project/us-central1-a"]
    assert adapter.pending == []


def test_an_api_error_is_one_clear_error(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, machines=1)
    name = instance_names(spec, RUN_ID)[0]
    quota = {
        "error": {
            "code": 403,
            "message": "Quota 'N2_CPUS' exceeded. Limit: 0.0 in region us-central1.",
            "errors": [{"message": "Quota 'N2_CPUS' exceeded. Limit: 0.0 in region us-central1.", "domain": "usageLimits", "reason": "quotaExceeded"}],
        }
    }
    path = "/compute/v1/projects/demo-project/zones/us-central1-a/instances"
    compute, _ = fake_compute([{"method": "POST", "path": path, "status": 403, "response": quota}])
    with pytest.raises(GcpError, match=rf"creating instance {name}: 403 .*Quota 'N2_CPUS' exceeded"):
        Provisioner(spec, RUN_ID, compute, sleep=lambda s: None).create()


def test_the_fingerprint_shown_for_a_guest_attribute_key(tmp_path: Path) -> None:
    from hydrodeploy.deploy.gcp import _fp

    key = host_key(tmp_path, 0)
    assert _fp("ssh-ed25519", key.get_base64()) == fingerprint(key)
    assert _fp("ssh-unknown", base64.b64encode(b"junk").decode()) == "(fingerprint unavailable)"
