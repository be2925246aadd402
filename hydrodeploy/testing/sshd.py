"""Real SSH hosts on this machine: each a network namespace running OpenSSH's ``sshd``.

:class:`SshdHosts` creates ``count`` namespaces on a bridge (the local cluster's
:class:`~hydrodeploy.deploy.local.Network`: each host has its own address, 10.213.<k>.<i>, and
reaches the others and this machine through the bridge), and in each runs ``sshd -D`` with a
configuration, host key, ``authorized_keys`` and log of its own under a temporary root, plus a
private working directory that the orchestrator only reaches over SSH (the cluster file's
``workdir:``). The user key and the ``known_hosts`` file are throwaway files under the same
root: nothing reads or writes ``~/.ssh``. Everything (sshd, whatever still runs in the
namespaces, the namespaces, the bridge, the files) goes away on :meth:`SshdHosts.close`.

Needs root, iproute2 and ``/usr/sbin/sshd`` (Debian: ``apt-get install openssh-server``);
:func:`unavailable` says why not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from hydrodeploy.deploy.local import Network, namespaces_unavailable

SSHD = "/usr/sbin/sshd"


def unavailable() -> str | None:
    """Why SSH hosts in namespaces cannot be made here, or None."""
    reason = namespaces_unavailable()
    if reason is not None:
        return reason
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is not installed (openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed (openssh-client)"
    return None


def keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair at ``path`` (and ``path.pub``); the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return (path.with_name(path.name + ".pub")).read_text().strip()


def fingerprint(pub: Path) -> str:
    """``SHA256:...`` of a public key file, as ssh-keygen prints it."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def _sshd(namespace: str, directory: Path) -> subprocess.Popen[bytes]:
    with open(directory / "sshd.log", "ab") as log:
        return subprocess.Popen(
            ["ip", "netns", "exec", namespace, SSHD, "-D", "-e", "-f", str(directory / "sshd_config")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


@dataclass
class SshdHost:
    index: int
    namespace: str
    address: str
    directory: Path  # its sshd's files
    workdir: Path  # the private working directory hydrodeploy is told to use
    host_key_line: str  # "ssh-ed25519 AAAA..."
    fingerprint: str
    sshd: subprocess.Popen[bytes]

    def pids(self) -> set[int]:
        """Every process in the host's namespace except its sshd listener."""
        out = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True, check=False).stdout
        return {int(p) for p in out.split()} - {self.sshd.pid}

    def processes(self) -> list[str]:
        """``pid command line`` of everything running on the host but its sshd listener."""
        found = []
        for pid in sorted(self.pids()):
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{pid} {command.strip()}")
        return found


class SshdHosts:
    """``count`` SSH hosts (see the module docstring); also a context manager. With ``path``,
    SSH sessions start with that ``PATH`` (sshd's ``SetEnv``; the login shell's startup files
    may add to it): a host without some program, e.g. perf."""

    def __init__(self, count: int, root: Path | None = None, path: str | None = None) -> None:
        self.path = path
        self.root = Path(tempfile.mkdtemp(prefix="hydrodeploy-sshd-", dir=root))
        self.root.chmod(0o755)
        self.hosts: list[SshdHost] = []
        self.network: Network | None = None
        try:
            self.user_key = self.root / "user_key"
            user_pub = keygen(self.user_key, "hydrodeploy-test-user")
            self.authorized_keys = self.root / "authorized_keys"
            self.authorized_keys.write_text(user_pub + "\n")
            self.authorized_keys.chmod(0o600)
            self.known_hosts = self.root / "known_hosts"
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
            self.network = Network(0.0)
            for i in range(count):
                self.hosts.append(self._start(i))
            self.write_known_hosts(self.hosts)
            for host in self.hosts:
                self._wait_listening(host)
        except BaseException:
            self.close()
            raise

    def _start(self, i: int) -> SshdHost:
        assert self.network is not None
        namespace, address = self.network.add()
        directory = self.root / f"host{i}"
        workdir = directory / "work"
        workdir.mkdir(parents=True)
        key = directory / "ssh_host_ed25519_key"
        line = keygen(key, f"host{i}")
        config = directory / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {address}",
                    "Port 22",
                    f"HostKey {key}",
                    f"PidFile {directory / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "StrictModes no",  # the key files live under a temporary directory
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "MaxStartups 10:30:100",
                    "MaxSessions 10",
                    "PrintMotd no",
                    "LogLevel INFO",
                    *([f'SetEnv PATH="{self.path}"'] if self.path is not None else []),
                    "",
                ]
            )
        )
        fields = line.split()
        pub = key.with_name(key.name + ".pub")
        return SshdHost(i, namespace, address, directory, workdir, f"{fields[0]} {fields[1]}", fingerprint(pub), _sshd(namespace, directory))

    def _wait_listening(self, host: SshdHost) -> None:
        deadline = time.monotonic() + 30.0
        while True:
            if host.sshd.poll() is not None:
                log = (host.directory / "sshd.log").read_text(errors="replace")
                raise RuntimeError(f"sshd of host {host.index} exited: {log}")
            with contextlib.suppress(OSError), socket.create_connection((host.address, 22), timeout=1.0) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd of host {host.index} does not answer on {host.address}:22")
            time.sleep(0.05)

    def crash(self, host: SshdHost) -> None:
        """The machine dies: its sshd and everything running on it are killed at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(host.sshd.pid, signal.SIGKILL)
        host.sshd.wait()
        for pid in host.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restart(self, host: SshdHost) -> None:
        """Its sshd again (same address, keys and configuration)."""
        host.sshd = _sshd(host.namespace, host.directory)
        self._wait_listening(host)

    def write_known_hosts(self, hosts: list[SshdHost]) -> None:
        """Make ``known_hosts`` hold exactly the keys of ``hosts``."""
        self.known_hosts.write_text("".join(f"{h.address} {h.host_key_line}\n" for h in hosts))

    def free_address(self) -> str:
        """An address on the hosts' network where no machine answers."""
        assert self.network is not None
        return f"10.213.{self.network.k}.250"

    def cluster_file(self, path: Path, hosts: list[str] | None = None, **extra: Any) -> Path:
        """An SSH cluster file for the hosts (or the given addresses, e.g. with an unreachable
        one), with the throwaway key and known_hosts and each host's private working directory."""
        workdirs = {h.address: str(h.workdir) for h in self.hosts}
        addresses = hosts if hosts is not None else [h.address for h in self.hosts]
        spec: dict[str, Any] = {
            "name": "netns-sshd",
            "kind": "ssh",
            "known_hosts": str(self.known_hosts),
            "ssh_config": None,
            "agent": False,
            "user": "root",
            "key": str(self.user_key),
            "python": "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else "python3",
            "hosts": [
                {"host": a, "workdir": workdirs.get(a, str(self.root / "unreachable"))} for a in addresses
            ],
            "ssh": {"connect_timeout_s": 5, "connect_retries": 2, "retry_backoff_s": 0.2},
        }
        spec.update(extra)
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    def leftovers(self) -> dict[str, list[str]]:
        """Per host, what runs there besides sshd's listener (SSH sessions that are closing
        included: callers poll until it is empty)."""
        return {h.address: h.processes() for h in self.hosts if h.pids()}

    def close(self) -> None:
        for host in self.hosts:
            if host.sshd.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(host.sshd.pid, signal.SIGTERM)
                try:
                    host.sshd.wait(5.0)
                except subprocess.TimeoutExpired:
                    os.killpg(host.sshd.pid, signal.SIGKILL)
                    host.sshd.wait(5.0)
            for pid in host.pids():  # whatever a failed test left in the namespace
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.network is not None:
            self.network.remove()
            self.network = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SshdHosts:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
