"""``perf`` on one node process: record CPU samples, fold the stacks, attribute them.

``perf record -e cpu-clock -g -p PID`` samples the process's CPU time (a software event: it works
in virtual machines and containers without hardware counters). ``perf script`` prints every
sample's stack; :func:`fold` turns them into folded stacks (``outer;...;leaf count``, the input
format of flame graphs). Each sample is put in one category of work by its frames
(:func:`category`): the Python interpreter (running the program's rules and the runtime's Python
code), msgpack serialization, HMAC authentication, the kernel's sockets and TCP/IP stack, the
disk (fsync, ext4, jbd2), the event loop's epoll, other kernel work (scheduling, page faults,
syscalls), other native code. The interpreter's share is then split between the rules and the
runtime with the node's own per-rule CPU counters (Python 3.11 frames are not visible to perf).

When ``perf`` is missing, not permitted (``perf_event_paranoid``) or fails, the result says why
(:attr:`PerfProfile.reason`) and carries no samples; callers go on with the runtime's counters.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EVENT = "cpu-clock"
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


_checked: dict[str, str | None] = {}


def problem() -> str | None:
    """Why perf cannot profile processes here (None when it can); checked once per process."""
    if "perf" in _checked:
        return _checked["perf"]
    reason: str | None = None
    exe = shutil.which("perf")
    if exe is None:
        reason = "perf is not installed (Debian: apt-get install linux-perf)"
    else:
        try:
            run = subprocess.run(
                [exe, "record", "-e", EVENT, "-o", "/dev/null", "-q", "--", "true"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if run.returncode != 0:
                last = (run.stderr.strip().splitlines() or ["(no message)"])[-1]
                reason = f"perf record is not permitted or failed: {last}"
                paranoid = _paranoid()
                if paranoid is not None:
                    reason += f" (kernel.perf_event_paranoid = {paranoid})"
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"perf could not run: {exc}"
    _checked["perf"] = reason
    return reason


def _paranoid() -> int | None:
    try:
        return int(Path("/proc/sys/kernel/perf_event_paranoid").read_text().strip())
    except (OSError, ValueError):
        return None


def frequency_for(cores: float, seconds: float) -> int:
    """Sampling frequency (per CPU-second) that gives about :data:`TARGET_SAMPLES` samples of a
    process using ``cores`` for ``seconds``: small quotas need high frequencies."""
    if cores <= 0 or seconds <= 0:
        return MIN_FREQUENCY
    return int(min(MAX_FREQUENCY, max(MIN_FREQUENCY, TARGET_SAMPLES / (cores * seconds))))


async def record(pid: int, seconds: float, data_path: Path, frequency: int) -> str | None:
    """Record ``pid`` for ``seconds`` into ``data_path``; None, or what went wrong."""
    reason = problem()
    if reason is not None:
        return reason
    data_path.parent.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        "perf", "record", "-e", EVENT, "-F", str(frequency), "-g", "-p", str(pid), "-o", str(data_path),
        "--", "sleep", f"{seconds:g}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0 or not data_path.exists():
        last = (err.decode(errors="replace").strip().splitlines() or ["(no message)"])[-1]
        return f"perf record exited with status {proc.returncode}: {last}"
    return None


async def script(data_path: Path) -> str:
    """``perf script`` of a recording: each sample's command, thread and stack."""
    proc = await asyncio.create_subprocess_exec(
        "perf", "script", "-i", str(data_path), "-F", "comm,tid,ip,sym,dso",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return out.decode(errors="replace")


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


async def profile_node(
    node: str,
    pid: int,
    seconds: float,
    cores: float,
    out_dir: Path,
    rule_cpu: Mapping[str, float],
    node_cpu: float,
) -> PerfProfile:
    """Record ``pid`` for ``seconds`` (it uses about ``cores``), fold, attribute, draw the flame
    graph into ``out_dir``."""
    frequency = frequency_for(cores, seconds)
    data = out_dir / "perf.data"
    reason = await record(pid, seconds, data, frequency)
    if reason is not None:
        return PerfProfile(node, pid, False, reason, seconds, frequency)
    text = await script(data)
    samples = parse_samples(text)
    data.unlink(missing_ok=True)  # large, and the folded stacks keep what the report needs
    if not samples:
        return PerfProfile(node, pid, False, "perf recorded no sample (the node was idle)", seconds, frequency)
    return summarize(node, pid, samples, seconds, frequency, rule_cpu, node_cpu, out_dir)


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
