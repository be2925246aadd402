"""The paired check: a rewritten configuration and the one it came from, deployed one after the other.

The loop predicts a rewritten configuration's throughput from costs calibrated on its parent's
sweep, then measures it in a sweep of its own a minute or more later. This machine's speed is not
steady over minutes (a fixed workload's CPU time moved two- to threefold in stretches of tens of
seconds, with nothing else running), so comparing the two sweeps - to keep or roll back the
rewrite, or to judge the prediction - also compares two speeds of the machine.

After the rewritten configuration's sweep, the parent, the rewritten configuration and the parent
again are deployed afresh, one after the other, and each is measured for a few windows at the knee
of its own sweep (:func:`~.confirm.knee_clients`). The rewritten configuration's throughput over
the mean of the parent's two deployments is the rewrite's gain at one speed of the machine: a
steady change of speed over the check cancels, and the parent, the side a fresh deployment
measured least steadily (its two windows 2,240 and 3,637 requests/s in one voting check), is
measured twice. Records of two deployments (parent, rewritten), written before the parent was
deployed again, read as they were. The parent's fresh throughput against its sweep's says how
the machine's speed moved since the prediction was calibrated; the prediction scaled by it is
what the cost model predicts at the speed the check ran at (:attr:`PairedCheck.prediction_error`).
Both errors are recorded: the sweeps' and the paired one.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from hydrodeploy.optimize.confirm import Visit, machine_conditions, spread, visit_from_json


@dataclass
class PairedCheck:
    parent: int  # the iteration the rewritten one came from
    parent_peak: float  # the parent's maximum throughput by its own sweep: what the prediction was calibrated on
    predicted: float | None  # the rewritten configuration's predicted throughput (None: no prediction)
    visits: list[Visit] = field(default_factory=list)  # the parent's deployment, the rewritten one's, the parent's again

    @property
    def parent_now(self) -> float | None:
        """The mean of the parent's deployments (the first, and the third when there is one)."""
        means = [_mean(v) for v in self.visits[0:1] + self.visits[2:3]]
        if not means or any(m is None for m in means):
            return None
        return statistics.fmean(m for m in means if m is not None)

    @property
    def rewritten_now(self) -> float | None:
        return _mean(self.visits[1]) if len(self.visits) > 1 else None

    @property
    def complete(self) -> bool:
        return len(self.visits) >= 2 and not any(v.error for v in self.visits)

    @property
    def ratio(self) -> float | None:
        """The rewritten configuration's throughput over its parent's, measured back to back;
        None unless both were measured and the parent completed something."""
        parent, rewritten = self.parent_now, self.rewritten_now
        if not self.complete or parent is None or rewritten is None or parent <= 0:
            return None
        return rewritten / parent

    @property
    def speed(self) -> float | None:
        """The parent's throughput now over its sweep's: how the machine's speed moved since the
        prediction was calibrated (1.0: unchanged)."""
        parent = self.parent_now
        if not self.complete or parent is None or parent <= 0 or self.parent_peak <= 0:
            return None
        return parent / self.parent_peak

    @property
    def predicted_ratio(self) -> float | None:
        if self.predicted is None or self.parent_peak <= 0:
            return None
        return self.predicted / self.parent_peak

    @property
    def prediction_error(self) -> float | None:
        """The predicted ratio over the measured one, less one: the prediction scaled to the speed
        the check ran at, against what the rewritten configuration measured then."""
        predicted, measured = self.predicted_ratio, self.ratio
        if predicted is None or measured is None or measured <= 0:
            return None
        return predicted / measured - 1

    def describe(self, index: int) -> str:
        """One sentence: what each deployment measured, the ratio, the prediction's error."""
        failed = next((v for v in self.visits if v.error), None)
        if failed is not None:
            return f"paired check: iteration {failed.iteration} {failed.error}"
        parent, rewritten = self.parent_now, self.rewritten_now
        if parent is None or rewritten is None:
            return "paired check: not measured"
        first = self.visits[0]
        parent_text = f"{spread(first.throughputs)} at {first.clients} clients"
        if len(self.visits) > 2:  # complete: every deployment measured something
            again = self.visits[2]
            parent_text = (
                f"the mean of {_mean(first) or 0.0:,.0f} ({parent_text}) and, deployed again after iteration {index}, "
                f"{_mean(again) or 0.0:,.0f} ({spread(again.throughputs)})"
            )
        text = (
            f"paired check (deployed afresh, one after the other): iteration {self.parent} {parent:,.0f} requests/s "
            f"({parent_text}), iteration {index} {rewritten:,.0f} ({spread(self.visits[1].throughputs)} at "
            f"{self.visits[1].clients})"
        )
        ratio = self.ratio
        if ratio is None:
            return text + f"; iteration {self.parent} completed nothing"
        text += f": {ratio:.2f}x"
        error, predicted = self.prediction_error, self.predicted_ratio
        if error is not None and predicted is not None:
            text += f", predicted {predicted:.2f}x ({error:+.0%})"
        machine = machine_conditions(self.visits)
        return f"{text} ({machine})" if machine else text

    def to_json(self) -> dict[str, Any]:
        return {
            "parent": self.parent,
            "parent_peak": self.parent_peak,
            "predicted": self.predicted,
            "visits": [asdict(v) for v in self.visits],
            "ratio": self.ratio,
            "speed": self.speed,
            "predicted_ratio": self.predicted_ratio,
            "prediction_error": self.prediction_error,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> PairedCheck:
        predicted = data.get("predicted")
        return PairedCheck(
            int(data["parent"]), float(data["parent_peak"]), None if predicted is None else float(predicted),
            [visit_from_json(v) for v in data.get("visits", [])],
        )  # fmt: skip


def _mean(visit: Visit) -> float | None:
    return statistics.fmean(visit.counted) if visit.throughputs and not visit.error else None
