"""Experiment files (``workloads/*.yaml``): which protocol, the clients, windows, sweep and SLO.

    name: voting                      # names the run directory
    protocol: ../protocols/voting.ded # relative to this file
    cluster: ../clusters/local.yaml   # default cluster; `--cluster` overrides it
    clients:
      processes: 2                    # client processes the virtual clients are spread over
      payload_bytes: 16
      keys: 1000                      # integer keys drawn uniformly from 0..keys-1
      timeout_ms: null                # re-send an unanswered request after this long
    windows: {warmup_s: 5, measure_s: 10, cooldown_s: 1, bin_s: 1}
    sweep:
      clients: null                   # an explicit list of client counts, or geometric:
      start: 1
      factor: 2
      max_clients: 256
      plateau_gain: 0.05              # stop after `plateau_steps` steps gaining less than 5%
      plateau_steps: 2
      repeats: 1
      refine: 1                       # rounds of measuring between the best count and its neighbours
      confirm: 2                      # points at the peak's count: the maximum is their mean
    slo: {p99_ms: null}               # stop once p99 exceeds this
    budget: {machines: null}           # machines (nodes) `analyze` may use
    analyze:                          # `hydrodeploy analyze`: windows, iterations, gain to keep
      windows: null                   # (default: the windows above)
      max_clients: null               # scaled configurations may need more clients (default: sweep's)
      iterations: 8
      min_gain: 0.05
      verify_seeds: 10
      calibrate: true
      time_budget_s: null             # seconds; no iteration starts that would end after it
    quick:                            # `--quick`: these windows and client counts instead
      windows: {warmup_s: 1, measure_s: 2, cooldown_s: 0.2, bin_s: 0.25}
      clients: [1, 4, 16]

Unknown keys are errors; every error names its key path and points at it.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from hydrodeploy.specfile import load_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClientsSpec(_Strict):
    processes: int = Field(default=2, ge=1, le=64)
    payload_bytes: int = Field(default=16, ge=1, le=1_000_000)
    keys: int = Field(default=1000, ge=1)
    timeout_ms: float | None = Field(default=None, gt=0)


class WindowsSpec(_Strict):
    warmup_s: float = Field(default=5.0, ge=0)
    measure_s: float = Field(default=10.0, gt=0)
    cooldown_s: float = Field(default=1.0, ge=0)
    bin_s: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _bins(self) -> WindowsSpec:
        if self.bin_s > self.measure_s:
            raise ValueError("bin_s must not exceed measure_s")
        return self

    @property
    def total_s(self) -> float:
        return self.warmup_s + self.measure_s + self.cooldown_s


def _positive_counts(value: list[int] | None) -> list[int] | None:
    if value is None:
        return None
    if not value:
        raise ValueError("needs at least one client count")
    if any(n < 1 for n in value):
        raise ValueError("client counts must be >= 1")
    if any(b <= a for a, b in itertools.pairwise(value)):
        raise ValueError("client counts must increase")
    return value


class SweepSpec(_Strict):
    clients: list[int] | None = None
    start: int = Field(default=1, ge=1)
    factor: float = Field(default=2.0, gt=1)
    max_clients: int = Field(default=256, ge=1, le=1 << 20)
    plateau_gain: float = Field(default=0.05, ge=0)
    plateau_steps: int = Field(default=2, ge=1)
    repeats: int = Field(default=1, ge=1, le=20)
    # rounds of measuring the geometric midpoints between the best client count and its measured
    # neighbours, the first as soon as a higher count fell short of the best (not with an explicit
    # `clients` list, nor with --quick)
    refine: int = Field(default=1, ge=0, le=5)
    # points measured at the peak's client count (its throughput is their mean): one window at
    # the peak is the highest of several noisy draws and overstates what the system sustains
    # (not with an explicit `clients` list, nor with --quick)
    confirm: int = Field(default=2, ge=1, le=5)

    _counts = field_validator("clients")(_positive_counts)

    def refine_rounds(self) -> int:
        return 0 if self.clients is not None else self.refine

    def confirm_points(self) -> int:
        return 1 if self.clients is not None else self.confirm

    def counts(self) -> list[int]:
        """The client counts to try, in order (the sweep may stop early)."""
        if self.clients is not None:
            return list(self.clients)
        out: list[int] = []
        n = self.start
        while n <= self.max_clients:
            out.append(n)
            n = max(n + 1, round(n * self.factor))
        return out


class SloSpec(_Strict):
    p99_ms: float | None = Field(default=None, gt=0)


class BudgetSpec(_Strict):
    machines: int | None = Field(default=None, ge=1)


class AnalyzeSpec(_Strict):
    """Settings of ``hydrodeploy analyze`` (the optimizer loop)."""

    windows: WindowsSpec | None = None  # windows of every measured point (default: the workload's)
    max_clients: int | None = Field(default=None, ge=1, le=1 << 20)  # sweeps go this far (default: sweep's)
    iterations: int = Field(default=8, ge=1, le=100)  # configurations measured, the base included
    min_gain: float = Field(default=0.05, ge=0)  # a rewrite is kept when throughput rises this much
    verify_seeds: int = Field(default=10, ge=0, le=1000)  # simulation seeds checking each rewrite
    calibrate: bool = True  # measure the runtime's own costs with a calibration program first
    time_budget_s: float | None = Field(default=None, gt=0)  # no iteration starts that would end after this
    # after the loop, the base program and the final configuration deployed in turn this many
    # times each (base, final, final, base, ...) to confirm the speed-up; 0: not confirmed
    confirm_pairs: int = Field(default=2, ge=0, le=20)
    # after each rewritten configuration's sweep, it and the configuration it came from deployed
    # afresh one after the other, to keep or roll it back and to judge its prediction at one speed
    # of this machine (:mod:`hydrodeploy.optimize.paired`); false: the sweeps decide
    paired_check: bool = True


class QuickSpec(_Strict):
    windows: WindowsSpec = WindowsSpec(warmup_s=1.0, measure_s=2.0, cooldown_s=0.2, bin_s=0.25)
    clients: list[int] = [1, 4, 16]

    _counts = field_validator("clients")(_positive_counts)


class WorkloadSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    protocol: str
    cluster: str | None = None
    description: str | None = None
    clients: ClientsSpec = ClientsSpec()
    windows: WindowsSpec = WindowsSpec()
    sweep: SweepSpec = SweepSpec()
    slo: SloSpec = SloSpec()
    budget: BudgetSpec = BudgetSpec()
    quick: QuickSpec = QuickSpec()
    analyze: AnalyzeSpec = AnalyzeSpec()

    @field_validator("protocol", "cluster")
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Paths are relative to the workload file; the protocol must exist."""
        if value is None:
            return None
        base: Path = (info.context or {}).get("base", Path.cwd())
        path = (base / value).resolve() if not Path(value).is_absolute() else Path(value)
        if info.field_name == "protocol" and not path.is_file():
            raise ValueError(f"no such file: {path}")
        return str(path)

    def protocol_name(self) -> str:
        return Path(self.protocol).stem

    def plan(self, quick: bool) -> tuple[WindowsSpec, list[int], int]:
        """(windows, client counts, repeats) of a normal or a quick run."""
        if quick:
            return self.quick.windows, list(self.quick.clients), 1
        return self.windows, self.sweep.counts(), self.sweep.repeats

    def analyze_sweep(self) -> SweepSpec:
        """The sweep ``hydrodeploy analyze`` measures: the workload's, as far as
        ``analyze.max_clients`` when that is set (and the sweep lists no counts)."""
        if self.analyze.max_clients is not None and self.sweep.clients is None:
            return self.sweep.model_copy(update={"max_clients": self.analyze.max_clients})
        return self.sweep


def load_workload(path: str | Path) -> WorkloadSpec:
    context: dict[str, Any] = {"base": Path(path).resolve().parent}
    return load_model(path, WorkloadSpec, context=context)
