"""SSH and GCP cluster files (validated with located key-path errors, resolved against
~/.ssh/config), host-key fingerprints, and the code bundle a remote host runs."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import paramiko
import pytest

import hydrodeploy
from hydrodeploy.cli.main import main
from hydrodeploy.deploy.bundle import (
    BUNDLED_DISTRIBUTIONS,
    build_bundle,
    make_bundle,
    program_files,
)
from hydrodeploy.deploy.cluster import load_cluster
from hydrodeploy.deploy.gcpfile import GcpClusterSpec
from hydrodeploy.deploy.ssh import fingerprint, resolve_targets
from hydrodeploy.deploy.sshfile import SshClusterSpec
from hydrodeploy.specfile import SpecError
from hydrodeploy.testing.sshd import fingerprint as ssh_keygen_fingerprint
from hydrodeploy.testing.sshd import keygen

ROOT = Path(__file__).resolve().parents[1]


def write(tmp: Path, text: str) -> Path:
    path = tmp / "c.yaml"
    path.write_text(text)
    return path


def test_a_full_ssh_cluster_file(tmp_path: Path) -> None:
    spec = load_cluster(
        write(
            tmp_path,
            "name: lab\nkind: ssh\nknown_hosts: keys/known\nuser: ubuntu\nkey: ~/id\n"
            "machine: {vcpus: 4, price_per_hour: 0.2}\n"
            "hosts:\n  - 10.0.0.2\n  - host: 10.0.0.3\n    user: admin\n    port: 2222\n    machine: {vcpus: 8}\n",
        )
    )
    assert isinstance(spec, SshClusterSpec)
    assert spec.known_hosts == str(tmp_path / "keys" / "known")  # relative to the cluster file
    assert spec.key == str(Path("~/id").expanduser())
    assert spec.host_key_policy == "strict"  # the default
    assert [h.host for h in spec.hosts] == ["10.0.0.2", "10.0.0.3"]
    assert spec.profile(spec.hosts[1]).vcpus == 8 and spec.profile(spec.hosts[1]).price_per_hour == 0.2
    assert spec.describe() == "lab (ssh, 2 hosts)"


@pytest.mark.parametrize(
    ("text", "expected", "line"),
    [
        ("hosts: []\n", "hosts: List should have at least 1 item", 3),
        ("hosts:\n  - host: a\n    prot: 22\n", "hosts[0].prot: unknown key", 5),
        ("hosts:\n  - host: a\n    port: 70000\n", "hosts[0].port: Input should be less than or equal to 65535", 5),
        ("host_key_policy: yes-please\nhosts: [a]\n", "host_key_policy: Input should be 'strict' or 'accept-new'", 3),
        ("hosts: [a, b, a]\n", "hosts: host a is listed twice", 3),
        ("hosts: [a]\nssh:\n  max_sessions: 0\n", "ssh.max_sessions: Input should be greater than or equal to 1", 5),
        ("hosts: [a]\nclients: everywhere\n", "clients: Input should be 'hosts' or 'local'", 4),
    ],
)
def test_ssh_mistakes_name_the_key_path_and_line(tmp_path: Path, text: str, expected: str, line: int) -> None:
    with pytest.raises(SpecError) as info:
        load_cluster(write(tmp_path, "name: lab\nkind: ssh\n" + text))
    rendered = info.value.render()
    assert f"c.yaml:{line}:" in rendered.splitlines()[0]
    assert expected in rendered
    assert "^" in rendered


def test_an_unknown_kind_names_the_kinds(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="kind: Input should be 'local', 'ssh' or 'gcp'"):
        load_cluster(write(tmp_path, "name: x\nkind: kubernetes\n"))


def test_run_exits_2_on_a_bad_ssh_cluster_file_without_contacting_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = write(tmp_path, "name: lab\nkind: ssh\nhosts:\n  - host: a\n    usr: me\n")
    code = main(["run", str(ROOT / "workloads" / "voting.yaml"), "--cluster", str(cluster), "--reports", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "hosts[0].usr: unknown key" in err


def test_gcp_cluster_file(tmp_path: Path) -> None:
    spec = load_cluster(write(tmp_path, "name: g\nkind: gcp\nproject: demo-project\nzone: us-central1-a\nmachines: 3\n"))
    assert isinstance(spec, GcpClusterSpec)
    assert spec.machine_type == "n2-standard-4"
    assert spec.instance_vcpus() == 4.0
    assert spec.instance_price() == pytest.approx(0.194236)
    assert "3 x n2-standard-4 in us-central1-a, $0.58/h" in spec.describe()
    with pytest.raises(SpecError, match=r"labels: Value error|labels: label Team=x"):
        load_cluster(write(tmp_path, "name: g\nkind: gcp\nproject: p\nzone: us-central1-a\nlabels: {Team: x}\n"))
    with pytest.raises(SpecError, match="zone: String should match pattern"):
        load_cluster(write(tmp_path, "name: g\nkind: gcp\nproject: p\nzone: moon\n"))


def test_targets_honour_ssh_config_but_the_cluster_file_wins(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host lab1\n  HostName 192.0.2.10\n  User alice\n  Port 2200\n  IdentityFile /keys/alice\nHost *\n  User bob\n")
    spec = SshClusterSpec.model_validate(
        {
            "name": "lab",
            "kind": "ssh",
            "ssh_config": str(config),
            "hosts": ["lab1", {"host": "lab2", "user": "carol", "key": "/keys/carol"}, {"host": "lab3", "port": 2022}],
            "python": "/opt/py/bin/python3 -X utf8",
        }
    )
    t1, t2, t3 = resolve_targets(spec)
    assert (t1.hostname, t1.port, t1.user, t1.keys) == ("192.0.2.10", 2200, "alice", ("/keys/alice",))
    assert (t2.hostname, t2.port, t2.user, t2.keys) == ("lab2", 22, "carol", ("/keys/carol",))
    assert (t3.user, t3.port, t3.label) == ("bob", 2022, "lab3:2022")
    assert t1.known_hosts_name() == "[192.0.2.10]:2200" and t2.known_hosts_name() == "lab2"
    assert t1.python == ("/opt/py/bin/python3", "-X", "utf8")


def test_fingerprints_are_the_ones_ssh_keygen_shows(tmp_path: Path) -> None:
    keygen(tmp_path / "k", "test")
    key = paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "k"))
    assert fingerprint(key) == ssh_keygen_fingerprint(tmp_path / "k.pub")


# ---- the bundle -----------------------------------------------------------------------------------


def test_the_bundle_is_content_addressed_and_holds_the_package_and_its_dependencies(tmp_path: Path) -> None:
    snapshot = tmp_path / "hydrodeploy"  # a copy: the bundle of files nobody edits meanwhile
    shutil.copytree(Path(hydrodeploy.__file__).parent, snapshot, ignore=shutil.ignore_patterns("__pycache__"))
    bundle = make_bundle(snapshot)
    assert hashlib.sha256(gzip.decompress(bundle.data)).hexdigest() == bundle.sha256
    (snapshot / "runtime" / "node.py").touch()  # a new modification time: the same bundle
    again = make_bundle(snapshot)
    assert again.sha256 == bundle.sha256 and again.data == bundle.data
    with (snapshot / "runtime" / "node.py").open("a") as f:  # new contents: another bundle
        f.write("\n")
    assert make_bundle(snapshot).sha256 != bundle.sha256
    with tarfile.open(fileobj=io.BytesIO(bundle.data)) as tar:
        names = set(tar.getnames())
    assert {"BUNDLE.json", "hydrodeploy/runtime/node.py", "hydrodeploy/language/ded.lark", "hydrodeploy/deploy/hostagent.py"} <= names
    assert {"lark/__init__.py", "msgpack/__init__.py", "msgpack/fallback.py", "hdrh/histogram.py"} <= names
    assert not any("__pycache__" in n or ".dist-info" in n for n in names)
    assert set(BUNDLED_DISTRIBUTIONS) == {"lark", "msgpack", "hdrhistogram", "uvloop"}


def test_node_and_client_modules_import_from_the_bundle_alone(tmp_path: Path) -> None:
    """With ``-S`` (no site-packages) and only the unpacked bundle on the path, the node and the
    client process import: the bundle holds everything they need. Run with the system's
    python3 when there is one (it has none of hydrodeploy's dependencies installed)."""
    with tarfile.open(fileobj=io.BytesIO(build_bundle().data)) as tar:
        tar.extractall(tmp_path, filter="data")
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    probe = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"], capture_output=True, text=True)
    if probe.stdout.strip() != build_bundle().ext_suffix:
        python = sys.executable
    code = (
        "import sys, hydrodeploy.runtime.node, hydrodeploy.bench.client, msgpack, hdrh.histogram, uvloop; "
        "from hydrodeploy.runtime.eventloop import loop_factory; assert loop_factory()[0] == 'uvloop'; "
        "assert all(m.__file__.startswith(sys.argv[1]) for m in (hydrodeploy.runtime.node, msgpack, uvloop)); "
        "assert 'pydantic' not in sys.modules and 'yaml' not in sys.modules"
    )
    subprocess.run([python, "-S", "-c", code, str(tmp_path)], check=True, env={"PYTHONPATH": str(tmp_path)}, cwd=tmp_path)


def test_a_program_ships_with_the_modules_its_functions_import() -> None:
    name, modules = program_files(ROOT / "protocols" / "kvs.ded")
    assert name == "kvs.ded"
    assert modules["protocols/functions.py"] == ROOT / "protocols" / "functions.py"
    assert "protocols/__init__.py" in modules
    assert program_files(ROOT / "protocols" / "voting.ded") == ("voting.ded", {})


# ---- teardown without hosts ----------------------------------------------------------------------


def test_teardown_of_a_missing_or_local_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["teardown", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nowhere'}: no such run directory"
    assert main(["teardown", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    (tmp_path / "spec.yaml").write_text("cluster: {kind: local}\n")
    assert main(["teardown", str(tmp_path)]) == 0
    assert "a local run (no cluster.json): its processes died with it" in capsys.readouterr().out
    (tmp_path / "cluster.json").write_text('{"kind": "mainframe"}')
    assert main(["teardown", str(tmp_path)]) == 2
    assert "unknown cluster kind 'mainframe'" in capsys.readouterr().err


def test_the_readme_cluster_files_validate(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Running on your cluster") :]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    kinds = []
    for i, block in enumerate(blocks):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(block)
        kinds.append(type(load_cluster(path)))
    assert kinds == [SshClusterSpec, GcpClusterSpec]
