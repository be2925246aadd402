"""``perf`` on one node process: its samples' stacks parsed, folded and attributed.

``perf record -e cpu-clock -g -p PID`` samples the process's CPU time (a software event: it works
in virtual machines and containers without hardware counters). It runs on the host the node runs
on (:meth:`hydrodeploy.deploy.host.Host.perf_record`: this machine, or over SSH with the host
agent), and so does ``perf script``, which prints every sample's stack with the host's symbols.
:func:`parse_samples` reads that text; :func:`fold` turns the samples into folded stacks
(``outer;...;leaf count``, the input format of flame graphs). Each sample is put in one category
of work by its frames (:func:`category`): the Python interpreter (running the program's rules and
the runtime's Python code), msgpack serialization, HMAC authentication, the kernel's sockets and
TCP/IP stack, the disk (fsync, ext4, jbd2), the event loop's epoll, other kernel work
(scheduling, page faults, syscalls), other native code. The interpreter's share is then split between the rules and the
runtime with the node's own per-rule CPU counters (Python 3.11 frames are not visible to perf).

When ``perf`` is missing, not permitted (``perf_event_paranoid``) or fails on the host, the
result says why (:attr:`PerfProfile.reason`, naming a remote host) and carries no samples;
callers go on with the runtime's counters.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydrodeploy.deploy.hostagent import PERF_EVENT

EVENT = PERF_EVENT
TARGET_SAMPLES = 2000  # aim for this many samples per profile
MIN_FREQUENCY = 499
MAX_FREQUENCY = 20_000

INTERPRETER = "Python interpreter"
SERIALIZATION = "serialization (msgpack)"
AUTHENTICATION = "authentication (HMAC-SHA256)"
SOCKETS = "sockets (kernel TCP/IP)"
DISK = "disk (fsync, ext4)"
EVENT_LOOP = "event loop (epoll)"
KERNEL = "kernel (scheduling, faults, syscalls)"
NATIVE = "other native code"
UNKNOWN = "unknown"
CATEGORIES = (INTERPRETER, SERIALIZATION, AUTHENTICATION, SOCKETS, DISK, EVENT_LOOP, KERNEL, NATIVE, UNKNOWN)

_DISK = re.compile(r"ext4|jbd2|blk_|bio|fsync|nvme|virtblk|virtio_blk|submit_|filemap_write|writeback|iomap")
_NET = re.compile(
    r"tcp|sock|inet|ip_|ipv4|ip6|skb|netif|net_rx|__dev_queue|dev_hard|loopback|sendmsg|recvmsg|sendto|recvfrom|napi|"
    r"__netif|nf_|unix_stream|veth|br_"
)
_POLL = re.compile(r"epoll|ep_poll|ep_send|ep_item|do_sys_poll|select")
_LIBC_NET = re.compile(r"^(__)?(send|recv|sendto|recvfrom|sendmsg|recvmsg|write|read|writev|readv)\b")


@dataclass(frozen=True)
class Frame:
    symbol: str
    dso: str  # shared object basename ("libpython3.11.so.1.0", "[kernel.kallsyms]")

    @property
    def kernel(self) -> bool:
        return self.dso.startswith("[kernel")

    def label(self) -> str:
        return self.symbol if self.symbol != "[unknown]" else f"[{self.dso}]"


@dataclass(frozen=True)
class PerfProfile:
    """perf samples of one node over a few seconds, or why there are none."""

    node: str
    pid: int
    available: bool
    reason: str = ""  # why perf did not run, or what went wrong
    seconds: float = 0.0
    frequency: int = 0
    samples: int = 0
    categories: dict[str, int] = field(default_factory=dict)  # samples per category
    attribution: dict[str, float] = field(default_factory=dict)  # share of CPU: rules, runtime parts
    rules: dict[str, float] = field(default_factory=dict)  # share of CPU per rule ("rule 3 'votes'")
    top_symbols: list[tuple[str, str, int]] = field(default_factory=list)  # (symbol, dso, samples) of leaves
    folded: str | None = None  # file of folded stacks, relative to the profile's directory
    flamegraph: str | None = None  # image, relative to the profile's directory

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> PerfProfile:
        fields = dict(data)
        fields["top_symbols"] = [tuple(t) for t in fields.get("top_symbols", [])]
        return PerfProfile(**fields)


def frequency_for(cores: float, seconds: float) -> int:
    """Sampling frequency (per CPU-second) that gives about :data:`TARGET_SAMPLES` samples of a
    process using ``cores`` for ``seconds``: small quotas need high frequencies."""
    if cores <= 0 or seconds <= 0:
        return MIN_FREQUENCY
    return int(min(MAX_FREQUENCY, max(MIN_FREQUENCY, TARGET_SAMPLES / (cores * seconds))))


_FRAME = re.compile(r"^\s*([0-9a-fA-F]+)\s+(.*?)\s+\((.*)\)\s*$")


def parse_samples(text: str) -> list[list[Frame]]:
    """Every sample's frames, leaf first, from ``perf script`` output."""
    samples: list[list[Frame]] = []
    current: list[Frame] | None = None
    for line in text.splitlines():
        if not line.strip():
            if current is not None:
                samples.append(current)
            current = None
            continue
        if not line[0].isspace():
            if current is not None:
                samples.append(current)
            current = []
            continue
        match = _FRAME.match(line)
        if match is None or current is None:
            continue
        symbol = re.sub(r"\+0x[0-9a-f]+$", "", match.group(2)) or "[unknown]"
        dso = match.group(3).rsplit("/", 1)[-1]
        current.append(Frame(symbol, dso))
    if current is not None:
        samples.append(current)
    return samples


def category(frames: list[Frame]) -> str:
    """The kind of work a sample (leaf first) was doing."""
    known = [f for f in frames if f.symbol != "[unknown]" or f.dso != "[unknown]"]
    if not known:
        return UNKNOWN
    for f in known:
        if "msgpack" in f.dso:
            return SERIALIZATION
        if re.search(r"libcrypto|_hashlib|_sha2|_sha256|_hmac", f.dso) or re.search(r"(?i)sha256|hmac", f.symbol):
            return AUTHENTICATION
    kernel = [f for f in known if f.kernel]
    if kernel:
        names = " ".join(f.symbol for f in kernel)
        if _DISK.search(names):
            return DISK
        if _POLL.search(names):
            return EVENT_LOOP
        if _NET.search(names):
            return SOCKETS
    leaf_user = next((f for f in known if not f.kernel), None)
    if leaf_user is not None and "libc" in leaf_user.dso:
        if _LIBC_NET.match(leaf_user.symbol):
            return SOCKETS if not kernel or not _DISK.search(" ".join(f.symbol for f in kernel)) else DISK
        if "epoll" in leaf_user.symbol:
            return EVENT_LOOP
    if kernel and known[0].kernel:
        return KERNEL
    if leaf_user is None:
        return KERNEL
    if "python" in leaf_user.dso or leaf_user.dso.startswith("_") or "libc" in leaf_user.dso:
        return INTERPRETER  # libpython, extension modules of the standard library, malloc/memcpy
    return NATIVE


def fold(samples: Iterable[list[Frame]], comm: str = "node", by_category: bool = True) -> Counter[str]:
    """Folded stacks: root first, frames joined by ``;``, with their sample counts; with
    ``by_category`` the sample's :func:`category` is the frame above the root. Frames perf
    could not symbolize (no frame pointers) are left out."""
    out: Counter[str] = Counter()
    for frames in samples:
        named = [f.label() for f in reversed(frames) if f.symbol != "[unknown]"]
        head = [comm, category(frames)] if by_category else [comm]
        out[";".join([*head, *(named or ["[unknown]"])])] += 1
    return out


def attribute(
    categories: Mapping[str, int], rule_cpu: Mapping[str, float], node_cpu: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Shares of the node's CPU: each perf category, with the interpreter's split into the
    program's rules (their CPU counters, at most the interpreter's share) and the runtime's
    Python code; and the share of each rule."""
    total = sum(categories.values())
    if total == 0:
        return {}, {}
    shares = {c: n / total for c, n in categories.items() if n}
    interp = shares.pop(INTERPRETER, 0.0)
    rules_total = sum(rule_cpu.values()) / node_cpu if node_cpu > 0 else 0.0
    rules_share = min(interp, rules_total)
    scale = rules_share / rules_total if rules_total > 0 else 0.0
    attribution = {"rules (program)": rules_share, "Python runtime (evaluator, transport, asyncio)": interp - rules_share}
    attribution.update(shares)
    per_rule = {r: cpu / node_cpu * scale for r, cpu in rule_cpu.items()} if node_cpu > 0 else {}
    return attribution, per_rule


def summarize(
    node: str,
    pid: int,
    samples: list[list[Frame]],
    seconds: float,
    frequency: int,
    rule_cpu: Mapping[str, float],
    node_cpu: float,
    out_dir: Path,
) -> PerfProfile:
    """Fold ``samples`` into ``out_dir/perf.folded``, draw ``out_dir/flamegraph.png``, and
    attribute the node's CPU to categories and rules."""
    folded = fold(samples, node)
    (out_dir / "perf.folded").write_text("".join(f"{stack} {n}\n" for stack, n in sorted(folded.items())))
    cats = Counter(category(s) for s in samples)
    leaves: Counter[tuple[str, str]] = Counter()
    for s in samples:
        leaf = next((f for f in s if f.symbol != "[unknown]"), None)
        if leaf is not None:
            leaves[(leaf.symbol, leaf.dso)] += 1
    attribution, per_rule = attribute(cats, rule_cpu, node_cpu)
    from hydrodeploy.profile.flamegraph import draw

    draw(folded, out_dir / "flamegraph.png", f"{node}: {len(samples)} perf samples ({EVENT}, {frequency} Hz)")
    return PerfProfile(
        node,
        pid,
        True,
        "",
        seconds,
        frequency,
        len(samples),
        {c: cats[c] for c in CATEGORIES if cats[c]},
        attribution,
        per_rule,
        [(sym, dso, n) for (sym, dso), n in leaves.most_common(15)],
        "perf.folded",
        "flamegraph.png",
    )
