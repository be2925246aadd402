"""The code a remote host runs, shipped as one content-addressed bundle.

A remote host needs only ``python3`` and ``sshd``: no pip, no internet. The bundle is a
deterministic ``tar.gz`` of the ``hydrodeploy`` package and the installed files of the
distributions its node and client processes import (:data:`BUNDLED_DISTRIBUTIONS`), named by the
SHA-256 of its uncompressed tar. A host unpacks it once into ``<workdir>/bundles/<sha256>/`` and
every later run with the same code reuses it.

Native extension modules travel too. ``msgpack``'s and ``uvloop``'s are optional (msgpack falls
back to pure Python, the processes to asyncio's event loop, when they do not load), but ``hdrhistogram``'s ``pyhdrh`` has no fallback, so the host's
Python must have the same extension ABI as this one (``EXT_SUFFIX``, e.g.
``.cpython-311-x86_64-linux-gnu.so``: CPython 3.11 on x86-64 Linux); the host probe checks it
before anything is started and names the host when it does not match.

A run also ships its program: the ``.ded`` file and the Python modules its ``.function``
declarations import (:func:`program_files`).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.metadata
import io
import json
import os
import sys
import sysconfig
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import hydrodeploy
from hydrodeploy.deploy.host import DeployError

BUNDLED_DISTRIBUTIONS = ("lark", "msgpack", "hdrhistogram", "uvloop")
"""What node and client processes import besides the standard library and hydrodeploy: the
grammar's parser (lark), the wire format (msgpack), latency histograms (hdrhistogram) and the
event loop (uvloop; :mod:`hydrodeploy.runtime.eventloop` falls back to asyncio's without it)."""

PACKAGE_SUFFIXES = (".py", ".lark", ".typed")
MANIFEST = "BUNDLE.json"
AGENT = "hydrodeploy/deploy/hostagent.py"  # the remote helper, run as a script inside the bundle


@dataclass(frozen=True)
class Bundle:
    sha256: str
    data: bytes  # the tar.gz
    files: int
    native: tuple[str, ...]  # extension modules inside
    ext_suffix: str  # the ABI they were built for

    @property
    def short(self) -> str:
        return self.sha256[:12]


def _package_files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file() or not path.name.endswith(PACKAGE_SUFFIXES):
            continue
        yield f"hydrodeploy/{path.relative_to(root).as_posix()}", path


def _distribution_files(name: str) -> Iterator[tuple[str, Path]]:
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise DeployError(f"cannot build the code bundle: the distribution {name!r} is not installed") from None
    for entry in dist.files or ():
        arc = entry.as_posix()
        first = arc.split("/", 1)[0]
        if first == ".." or first.endswith((".dist-info", ".egg-info")) or "__pycache__" in arc or arc.endswith(".pyc"):
            continue
        path = Path(str(entry.locate())).resolve()
        if path.is_file():
            yield arc, path


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


@functools.lru_cache(maxsize=1)
def build_bundle() -> Bundle:
    """The bundle of the code installed here (built once per process)."""
    return make_bundle(Path(hydrodeploy.__file__).resolve().parent)


def make_bundle(package: Path) -> Bundle:
    """The bundle of the ``hydrodeploy`` package at ``package`` and the installed
    distributions of :data:`BUNDLED_DISTRIBUTIONS`. Only paths and contents count: the same
    files give the same bundle, byte for byte."""
    members: dict[str, Path] = dict(_package_files(package))
    for dist in BUNDLED_DISTRIBUTIONS:
        members.update(_distribution_files(dist))
    ext_suffix = str(sysconfig.get_config_var("EXT_SUFFIX") or "")
    native = tuple(sorted(a for a in members if a.endswith(".so")))
    manifest = {
        "hydrodeploy": hydrodeploy.__version__,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "ext_suffix": ext_suffix,
        "native": list(native),
        "distributions": {d: importlib.metadata.version(d) for d in BUNDLED_DISTRIBUTIONS},
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        blob = json.dumps(manifest, indent=1, sort_keys=True).encode()
        tar.addfile(_tarinfo(MANIFEST, len(blob)), io.BytesIO(blob))
        for arc in sorted(members):
            data = members[arc].read_bytes()
            tar.addfile(_tarinfo(arc, len(data)), io.BytesIO(data))
    tar_bytes = raw.getvalue()
    digest = hashlib.sha256(tar_bytes).hexdigest()
    return Bundle(digest, gzip.compress(tar_bytes, mtime=0), len(members) + 1, native, ext_suffix)


# ---- the program of a run ---------------------------------------------------------------------


def _module_files(module_name: str, program_path: Path) -> dict[str, Path]:
    """The files of the top-level package (or module) that ``module_name`` lives in, when it is
    neither the standard library nor bundled; found as the node would find it (sys.path, then
    next to the program and in its parent directory, then the working directory)."""
    top = module_name.split(".", 1)[0]
    if top in sys.stdlib_module_names or top == "hydrodeploy":
        return {}
    here = program_path.resolve().parent
    for base in [Path(p) for p in sys.path if p] + [here.parent, here, Path.cwd()]:
        package = base / top
        if (package / "__init__.py").is_file():
            return {
                f"{top}/{p.relative_to(package).as_posix()}": p
                for p in sorted(package.rglob("*.py"))
                if "__pycache__" not in p.parts
            }
        single = base / f"{top}.py"
        if single.is_file():
            return {f"{top}.py": single}
    return {}  # installed elsewhere (a compiled module?): the host must provide it


def program_files(program_path: str | Path) -> tuple[str, dict[str, Path]]:
    """What a run of ``program_path`` needs on a host: the name of the program file and
    ``{relative path: local file}`` of the Python modules its functions import (to be put on the
    processes' ``PYTHONPATH``)."""
    from hydrodeploy.language import parse_file

    path = Path(program_path)
    program = parse_file(str(path))
    modules: dict[str, Path] = {}
    for decl in program.functions:
        modules.update(_module_files(decl.target.partition(":")[0], path))
    return path.name, modules


def tar_files(files: Mapping[str, Path | bytes]) -> bytes:
    """A tar.gz of ``{relative path: local file or content}``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for arc in sorted(files):
            src = files[arc]
            data = src if isinstance(src, bytes) else src.read_bytes()
            tar.addfile(_tarinfo(arc, len(data)), io.BytesIO(data))
    return raw.getvalue()


def describe_bundle(bundle: Bundle) -> str:
    kib = len(bundle.data) / 1024
    return f"bundle {bundle.short} ({bundle.files} files, {kib:,.0f} KiB{', native ' + bundle.ext_suffix if bundle.native else ''})"


def agent_path(bundle_dir: str) -> str:
    return os.path.join(bundle_dir, AGENT)
