"""Code on the workers: a real scheduler and workers that cannot import this project run ``process``, ``scan-mass``
and ``scan-patchset`` with the code the client ships (:mod:`deploy.shipping`), and give what a local run gives;
their packages are checked against the client's at connect time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from distributed import Client

import deploy.shipping
from deploy import worker_probe
from deploy.cli import main
from deploy.clusters import dask_client
from deploy.errors import DeployError
from deploy.shipping import check_versions, prepare_workers
from processors.generate import generate_dataset
from tests.deploy._dask_processes import bare_python, dask_cluster
from tests.stats.test_hepdata import SIGNALS, toy_dir  # noqa: F401 - toy_dir: the tiny patchset, a fixture


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bare_python(tmp_path_factory.mktemp("bare-venv"))


@pytest.fixture(scope="module")
def cluster(python: Path, tmp_path_factory: pytest.TempPathFactory):
    with dask_cluster(python, tmp_path_factory.mktemp("bare-dask")) as running:
        yield running


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    generated = generate_dataset(tmp_path_factory.mktemp("gen"), events=100_000, seed=5, signal_strength=3.0,
                                 periods=["data15_periodD", "data15_periodE"])
    return [str(path) for path in generated.files]


def succeed(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        main(argv)
    except SystemExit as exit_:
        assert exit_.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().err


def fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code, capsys.readouterr().err


def without_timing(value):
    """A result document without wall times and paths (which differ between two runs of the same computation)."""
    if isinstance(value, dict):
        return {key: without_timing(item) for key, item in value.items()
                if key not in {"seconds", "wall_time", "elapsed", "path", "input", "source", "speed", "directory"}}
    if isinstance(value, list):
        return [without_timing(item) for item in value]
    return value


def differences(a, b, rel: float = 1e-9, tolerance: float = 1e-12, where: str = "") -> list[str]:
    """Where two documents differ: numbers beyond ``rel`` (and ``tolerance`` absolutely), anything else at all."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a.keys() ^ b.keys())}"]
        return [found for key in a for found in differences(a[key], b[key], rel, tolerance, f"{where}.{key}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} != {len(b)} items"]
        return [found for i, (x, y) in enumerate(zip(a, b)) for found in differences(x, y, rel, tolerance, f"{where}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        return [] if a == pytest.approx(b, rel=rel, abs=tolerance) else [f"{where}: {a!r} != {b!r}"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def shipped_code(client: Client) -> list[tuple[str, str | None]]:
    """Where each worker imported ``stats`` from, and the digest of the code it imports (both sent by value: the
    workers cannot import this test module)."""
    locations = client.run(lambda: __import__("sys").modules["stats"].__file__)
    digests = client.run(worker_probe.describe)
    return [(locations[address], digests[address]["code"]) for address in sorted(locations)]


@pytest.mark.slow
def test_process_and_scan_mass_on_workers_without_the_project_match_a_local_run(cluster, dataset, tmp_path, capsys):
    remote, local = tmp_path / "remote", tmp_path / "local"
    succeed(["process", *dataset, "--scheduler", cluster.address, "--no-progress", "--out", str(remote)], capsys)
    succeed(["process", *dataset, "--workers", "0", "--no-progress", "--out", str(local)], capsys)
    summaries = [json.loads((path / "summary.json").read_text()) for path in (remote, local)]
    assert summaries[0]["failed_chunks"] == [] and summaries[0]["events_processed"] == 100_216
    for key in ("mass", "cutflow", "events_processed", "lumi_fb"):
        assert summaries[0][key] == summaries[1][key], key
    assert (remote / "histograms.json").read_text() == (local / "histograms.json").read_text()

    # The same histograms, scanned on the bare workers and in this process.
    shutil.copy(remote / "histograms.json", local / "histograms.json")
    shutil.copy(remote / "summary.json", local / "summary.json")
    succeed(["scan-mass", str(remote), "--masses", "115:135:5", "--scheduler", cluster.address], capsys)
    succeed(["scan-mass", str(local), "--masses", "115:135:5", "--workers", "0"], capsys)
    scans = [json.loads((path / "mass_scan.json").read_text()) for path in (remote, local)]
    assert [point["status"] for point in scans[0]["points"]] == ["ok"] * 5
    assert without_timing(scans[0]["points"]) == without_timing(scans[1]["points"])

    # The workers imported the shipped archive, named by the digest of the code in it, not an installed copy.
    with Client(cluster.address) as client:
        for location, digest in shipped_code(client):
            assert f"/{deploy.shipping.ARCHIVE_PREFIX}{digest[:16]}.zip/stats/" in location


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpy", "jax"])  # jax: 75 s on 2 cores
def test_patch_scan_engine_child_runs_the_shipped_code_and_matches_a_local_run(cluster, toy_dir, tmp_path, capsys,
                                                                               backend):
    remote, local = tmp_path / "remote.json", tmp_path / "local.json"
    common = ["--backend", backend, "--no-plot"]
    succeed(["scan-patchset", str(toy_dir), "--scheduler", cluster.address, "--out", str(remote), *common], capsys)
    succeed(["scan-patchset", str(toy_dir), "--workers", "1", "--out", str(local), *common], capsys)
    scans = [json.loads(path.read_text()) for path in (remote, local)]
    # Every point computed in the workers' engine child processes, which can import only the shipped archive; with
    # jax by the compact engine, not a fallback.
    assert [row["status"] for row in scans[0]["results"]] == ["ok"] * len(SIGNALS)
    assert {row["method"] for row in scans[0]["results"]} == {"compact" if backend == "jax" else "pyhf"}
    # The jax engine starts a structure's later patches from its first patch's Hessian, and which patch a worker
    # takes first differs between 2 workers and 1: the fits' last digits may differ (a POI at its bound 0 ends at 0
    # or 4e-8), nothing else.
    assert differences(without_timing(scans[0]), without_timing(scans[1]), tolerance=1e-6) == []
    if backend == "numpy":
        assert without_timing(scans[0]) == without_timing(scans[1])


@pytest.mark.slow  # 60-240 s on 2 shared cores (two whole runs)
def test_run_on_workers_without_the_project_matches_a_local_run(cluster, tmp_path, capsys):
    common = ["--data-dir", str(tmp_path / "data"), "--scale", "0.02", "--masses", "120:130:3", "--no-progress"]
    succeed(["run", "--scheduler", cluster.address, "--out", str(tmp_path / "remote"), *common], capsys)
    succeed(["run", "--workers", "2", "--out", str(tmp_path / "local"), *common], capsys)
    # The same documents but for the output folder's name.
    remote = json.loads((tmp_path / "remote" / "results.json").read_text().replace(str(tmp_path / "remote"),
                                                                                   str(tmp_path / "local")))
    local = json.loads((tmp_path / "local" / "results.json").read_text())
    assert remote["processing"]["failed_chunks"] == 0 and remote["processing"]["events_processed"] > 0
    # Identities name the inputs' digests, and summary.json holds its wall time: compare everything else.
    for step in ("processing", "fit", "mass_scan", "patchset"):
        found = differences(without_timing(remote[step]), without_timing(local[step]), where=step)
        assert [line for line in found if ".identity." not in line] == []
    histograms = [(tmp_path / name / "processing" / "histograms.json").read_bytes() for name in ("remote", "local")]
    assert histograms[0] == histograms[1]


def test_code_is_shipped_once_and_reaches_workers_that_join_later(cluster, capsys):
    with Client(cluster.address) as client:
        prepare_workers(client)  # shipped here unless an earlier test did
        again = prepare_workers(client)
        assert again.shipped is None and again.workers == 2 and again.warnings == []
        worker = cluster.add_worker()
        try:
            client.wait_for_workers(3, timeout=90)
            assert [digest for _, digest in shipped_code(client)] == [again.digest] * 3
        finally:
            worker.terminate()
            worker.wait(30)


def test_a_version_that_must_match_ends_in_one_error_line(cluster, dataset, monkeypatch, tmp_path, capsys):
    probe = deploy.shipping._probe

    def older_distributed(client):
        answers = probe(client)
        first = sorted(name for name in answers if name != "scheduler")[0]
        answers[first]["versions"]["distributed"] = "2024.1.0"
        answers["scheduler"]["versions"]["numpy"] = "1.26.4"
        return answers

    monkeypatch.setattr(deploy.shipping, "_probe", older_distributed)
    code, err = fails(["process", *dataset, "--scheduler", cluster.address, "--no-progress",
                       "--out", str(tmp_path / "out")], capsys)
    lines = [line for line in err.splitlines() if not line.startswith("Dask dashboard")]
    assert code == 2 and len(lines) == 1, err
    mine = worker_probe.versions()
    assert lines[0].startswith(f"error: the Dask cluster at {cluster.address} does not match this client: ")
    assert "distributed 2024.1.0 on worker tcp://127.0.0.1:" in lines[0]
    assert f"(this client: {mine['distributed']}; major.minor must match)" in lines[0]
    assert f"numpy 1.26.4 on the scheduler (this client: {mine['numpy']}; the major version must match)" in lines[0]
    assert not (tmp_path / "out" / "summary.json").exists()


def test_version_rules():
    client = {"python": "3.11.7", "dask": "2026.8.0", "distributed": "2026.8.0", "cloudpickle": "3.1.3",
              "numpy": "2.4.6", "coffea": "2026.9.0", "uproot": "5.7.7", "awkward": "2.8.0", "pyhf": "0.7.6",
              "jax": "0.10.2"}
    same_minor = dict(client, dask="2026.8.1", distributed="2026.8.1", numpy="2.3.0", python="3.11.9")
    assert check_versions(client, {"scheduler": same_minor, "tcp://w": same_minor}) == ([], [])
    worker = dict(client, cloudpickle="3.0.0", uproot="5.6.0", jax=None)
    scheduler = {**client, "coffea": None, "jax": None, "uproot": None}  # the scheduler runs no task
    errors, warnings = check_versions(client, {"scheduler": scheduler, "tcp://w1": worker, "tcp://w2": worker})
    assert errors == ["cloudpickle 3.0.0 on 2 workers (this client: 3.1.3; major.minor must match)"]
    assert warnings == ["uproot 5.6.0 on 2 workers (this client: 5.7.7)",
                        "no jax on 2 workers (scan-patchset --backend jax will fail there)"]
    errors, _ = check_versions(client, {"scheduler": dict(client, python="3.12.1", numpy="1.26.4"),
                                        "tcp://w1": dict(client, distributed=None)})
    assert errors == ["python 3.12.1 on the scheduler (this client: 3.11.7; major.minor must match)",
                      "no distributed on worker tcp://w1 (this client: 2026.8.0; major.minor must match)",
                      "numpy 1.26.4 on the scheduler (this client: 2.4.6; the major version must match)"]


def test_the_shipped_archive_has_the_code_digest_of_this_process(tmp_path):
    import subprocess
    import sys

    archive = deploy.shipping.code_archive(tmp_path)
    assert archive.name == f"{deploy.shipping.ARCHIVE_PREFIX}{worker_probe.code_digest()[:16]}.zip"
    # An interpreter importing the project from the archive only computes the same digest.
    probe = Path(worker_probe.__file__)
    shutil.copy(probe, tmp_path / "probe_copy.py")
    command = "import probe_copy, stats; print(probe_copy.code_digest()); print(stats.__file__)"
    done = subprocess.run([sys.executable, "-S", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": f"{archive}:{tmp_path}"}, timeout=60, check=True)
    digest, location = done.stdout.split()
    assert digest == worker_probe.code_digest() and location.startswith(str(archive))


def test_no_workers_yet_ships_for_those_that_join(python, tmp_path, capsys):
    with dask_cluster(python, tmp_path, workers=0) as running, Client(running.address) as client:
        lines = []
        done = prepare_workers(client, report=lines.append)
        assert done.workers == 0 and done.shipped is not None
        assert lines == [f"warning: no Dask workers at {running.address} yet: their packages are not checked; this "
                         "project's code is shipped to them as they join"]
        running.add_worker()
        client.wait_for_workers(1, timeout=90)
        assert [digest for _, digest in shipped_code(client)] == [done.digest]


def test_a_local_cluster_gets_nothing():
    # Its workers import this checkout: nothing to ship, nothing to warn about.
    with dask_client(workers=1, announce=False) as client:
        done = prepare_workers(client)
    assert done.shipped is None and done.workers == 1 and done.warnings == []


def test_prepare_refuses_when_shipping_does_not_take(cluster, monkeypatch):
    probe = deploy.shipping._probe
    monkeypatch.setattr(deploy.shipping, "_probe",
                        lambda client: {name: dict(answer, code="0" * 64) for name, answer in probe(client).items()})
    with Client(cluster.address) as client, pytest.raises(DeployError, match="is not this client's even after"):
        prepare_workers(client)
