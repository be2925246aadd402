"""Workload and cluster files: the shipped ones validate; every mistake is one located error that
names the key path, and `hydrodeploy run` exits 2 on it without deploying anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydrodeploy.bench.measure import Point, measured_peak, peak, refinement
from hydrodeploy.bench.workload import WorkloadSpec, load_workload
from hydrodeploy.cli.main import main
from hydrodeploy.deploy.cluster import LOCAL_DEFAULT, load_cluster
from hydrodeploy.report.plan import machine_for
from hydrodeploy.specfile import SpecError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["voting", "two_pc", "paxos", "kvs"])
def test_shipped_workloads_validate(name: str) -> None:
    wl = load_workload(ROOT / "workloads" / f"{name}.yaml")
    assert wl.protocol == str(ROOT / "protocols" / f"{name}.ded")
    assert wl.cluster == str(ROOT / "clusters" / "local.yaml")
    windows, counts, repeats = wl.plan(quick=True)
    assert windows.total_s * len(counts) < 40  # --quick stays well under a minute
    assert counts == sorted(counts) and repeats == 1


MACHINE_PROFILES = ROOT / "clusters" / "machines.yaml"  # the plan's catalog, not a cluster


@pytest.mark.parametrize(
    "path", sorted(set((ROOT / "clusters").glob("*.yaml")) - {MACHINE_PROFILES}), ids=lambda p: p.name
)
def test_shipped_clusters_validate(path: Path) -> None:
    assert load_cluster(path).name


def test_shipped_machine_profiles_validate() -> None:
    machine = machine_for({}, "n2-standard-4", MACHINE_PROFILES)
    assert machine.price_per_hour is not None and machine.price_per_hour > 0


def test_the_default_cluster_is_clusters_local_yaml() -> None:
    assert load_cluster(ROOT / "clusters" / "local.yaml") == LOCAL_DEFAULT


def write(tmp: Path, text: str) -> Path:
    path = tmp / "w.yaml"
    path.write_text(f"name: t\nprotocol: {ROOT / 'protocols' / 'voting.ded'}\n" + text)
    return path


@pytest.mark.parametrize(
    ("text", "expected", "line"),
    [
        ("sweep:\n  factor: 0.5\n", "sweep.factor: Input should be greater than 1", 4),
        ("sweep:\n  fator: 2\n", "sweep.fator: unknown key", 4),
        ("windows:\n  measure_s: -1\n", "windows.measure_s: Input should be greater than 0", 4),
        ("windows:\n  measure_s: 1\n  bin_s: 2\n", "windows: bin_s must not exceed measure_s", 3),
        ("quick:\n  clients: [4, 2]\n", "quick.clients: client counts must increase", 4),
        ("clients:\n  processes: many\n", "clients.processes: Input should be a valid integer", 4),
        ("slo: 5\n", "slo: Input should be a valid dictionary", 3),
    ],
)
def test_mistakes_name_the_key_path_and_line(tmp_path: Path, text: str, expected: str, line: int) -> None:
    with pytest.raises(SpecError) as info:
        load_workload(write(tmp_path, text))
    rendered = info.value.render()
    assert f"w.yaml:{line}:" in rendered.splitlines()[0]
    assert expected in rendered
    assert "^" in rendered  # a caret under the key or value


def test_missing_and_dangling_paths(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("name: t\n")
    with pytest.raises(SpecError, match="protocol: missing required key"):
        load_workload(path)
    path.write_text("name: t\nprotocol: nowhere.ded\n")
    with pytest.raises(SpecError, match=r"protocol: no such file: .*nowhere\.ded"):
        load_workload(path)
    with pytest.raises(SpecError, match="no such file"):
        load_workload(tmp_path / "absent.yaml")


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("name: t\nsweep: [1, 2\n")
    with pytest.raises(SpecError) as info:
        load_workload(path)
    assert "not valid YAML" in str(info.value) and "w.yaml:" in str(info.value)


def test_cluster_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: c\nmachine:\n  cpus: 0\n")
    with pytest.raises(SpecError, match=r"c.yaml:3:\d+: error: machine.cpus: Input should be greater than 0"):
        load_cluster(path)
    path.write_text("name: c\nkind: kubernetes\n")
    with pytest.raises(SpecError, match="kind: Input should be 'local', 'ssh' or 'gcp'"):
        load_cluster(path)


def test_cli_exits_2_on_a_bad_file_without_deploying(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "sweep:\n  repeats: 0\n")
    assert main(["run", str(bad), "--reports", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err
    assert "sweep.repeats: Input should be greater than or equal to 1" in err
    assert not (tmp_path / "reports").exists()
    good = write(tmp_path, "")
    assert main(["run", str(good), "--cluster", str(tmp_path / "none.yaml"), "--reports", str(tmp_path / "r")]) == 2
    assert "none.yaml: no such file" in capsys.readouterr().err


def test_sweep_counts_are_geometric() -> None:
    wl = WorkloadSpec.model_validate(
        {"name": "t", "protocol": str(ROOT / "protocols" / "voting.ded"), "sweep": {"start": 1, "factor": 1.5, "max_clients": 10}}
    )
    assert wl.sweep.counts() == [1, 2, 3, 4, 6, 9]


def _measured(clients: int, throughput: float, p99_ms: float = 10.0, repeat: int = 0) -> Point:
    return Point(
        index=0, clients=clients, repeat=repeat, throughput=throughput, p50_ms=1.0, p90_ms=1.0, p99_ms=p99_ms,
        p999_ms=p99_ms, mean_ms=1.0, completed=1, sent=1, retries=0, duplicates=0, unmatched=0, series=[throughput],
        bin_s=1.0, cv=0.0, client_cpu=0.0, little_ratio=1.0, unstable=False, client_bound=False,
    )  # fmt: skip


def test_refinement_measures_between_the_peak_and_its_neighbours() -> None:
    sweep = [_measured(256, 5_000), _measured(512, 6_800), _measured(1024, 6_000)]
    assert refinement(sweep, None) == [362, 724]
    # a second round narrows down around the new best (724); 512..724 and 724..1024 are still wide
    assert refinement([*sweep, _measured(362, 6_100), _measured(724, 7_800)], None) == [609, 861]


def test_refinement_respects_the_slo_and_the_ends_of_the_sweep() -> None:
    # the highest throughput broke the SLO: the peak is the best count within it
    sweep = [_measured(64, 3_000), _measured(128, 4_000), _measured(256, 4_500, p99_ms=900.0)]
    assert refinement(sweep, 500.0) == [91, 181]
    # the best count is the last one measured: the peak is not bracketed yet
    assert refinement([_measured(64, 3_000), _measured(128, 4_000)], None) == []
    # neighbours closer than REFINE_MIN_RATIO: nothing left to narrow
    assert refinement([_measured(100, 1_000), _measured(110, 1_200), _measured(120, 1_100)], None) == []
    assert refinement([], None) == []


def test_refinement_uses_the_mean_over_repeats() -> None:
    sweep = [_measured(8, 900), _measured(8, 300, repeat=1), _measured(16, 700), _measured(32, 650)]
    assert refinement(sweep, None) == [11, 23]  # 16 (mean 700) beats 8 (mean 600)


def test_the_peak_is_the_best_mean_and_stands_for_it_by_its_closest_point() -> None:
    sweep = [_measured(4, 600), _measured(8, 900), _measured(16, 650)]
    assert _peak(sweep) == (8, 900.0, (900.0,))
    sweep.append(_measured(8, 380, repeat=1))  # the lucky window confirmed lower: 640 < 650
    assert _peak(sweep) == (16, 650.0, (650.0,))
    sweep.append(_measured(16, 560, repeat=1))  # 16's mean falls to 605
    assert _peak(sweep) == (8, 640.0, (900.0, 380.0))
    top = peak(sweep)
    assert top is not None and top.point.throughput == 900  # equally close: the earlier stands
    sweep.append(_measured(8, 640, repeat=2))
    top = peak(sweep)
    assert top is not None and top.point.throughput == 640  # the point closest to the mean
    assert measured_peak(top)["measurements"] == [900, 380, 640]
    # a count with one point over the SLO is not within it, whatever its mean
    assert _peak([_measured(4, 600), _measured(8, 900), _measured(8, 800, p99_ms=900.0)], 500.0)[0] == 4
    assert peak([]) is None


def _peak(points: list[Point], slo_p99_ms: float | None = None) -> tuple[int, float, tuple[float, ...]]:
    top = peak(points, slo_p99_ms)
    assert top is not None
    return top.clients, top.throughput, top.measurements


def test_explicit_client_lists_and_quick_runs_are_not_refined() -> None:
    base = {"name": "t", "protocol": str(ROOT / "protocols" / "voting.ded")}
    assert WorkloadSpec.model_validate(base | {"sweep": {"clients": [1, 4, 16]}}).sweep.refine_rounds() == 0
    assert WorkloadSpec.model_validate(base | {"sweep": {"start": 1}}).sweep.refine_rounds() == 1
    assert WorkloadSpec.model_validate(base | {"sweep": {"refine": 0}}).sweep.refine_rounds() == 0
    # nor confirmed: an explicit list is measured as listed
    assert WorkloadSpec.model_validate(base | {"sweep": {"clients": [1, 4, 16]}}).sweep.confirm_points() == 1
    assert WorkloadSpec.model_validate(base | {"sweep": {"start": 1}}).sweep.confirm_points() == 2
    assert WorkloadSpec.model_validate(base | {"sweep": {"confirm": 3}}).sweep.confirm_points() == 3
