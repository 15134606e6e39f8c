"""DiphotonProcessor under coffea's own executors: each gives the histograms of ``opendata-stats process``.

As hist's own tests/test_dask.py fills the same data eagerly and through Dask and compares the histograms,
the same generated GamGam files go through the project's engine (the ``opendata-stats process`` command) and
through coffea: ``processor.Runner`` with the iterative, futures and Dask executors, and
``dataset_tools.apply_to_fileset`` (dask-awkward events, ``hist.dask`` histograms) computed on Dask's threads and
on a distributed cluster. Mass and cutflow histograms must be equal, bin for bin, and so must the event count.

``apply_to_fileset`` needs the ``coffea-dask`` extra (dask-awkward, dask-histogram and the dask they work with):
without dask-awkward those tests are skipped. Every dask-awkward release since 2025.5.0 requires dask < 2025.4.0;
installed past that cap (``pip install --no-deps``) on a later dask, computing fails in dask-awkward's graph
optimisation, and those tests are expected to fail with that error. Where the extra is not installed (CI's
``.[test]``), :func:`test_apply_to_fileset_with_the_coffea_dask_extra` installs its pins into an environment layered
over the test environment and runs the apply_to_fileset tests there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, NamedTuple

import dask
import hist
import pytest
from coffea import processor
from coffea.nanoevents import BaseSchema
from packaging.version import Version

from processors.generate import generate_dataset
from processors.histograms import read_histograms
from processors.processor import DiphotonProcessor

#: Entries per chunk (Runner) and per partition (apply_to_fileset): several per file.
CHUNK = 4_000

try:
    import dask_awkward  # noqa: F401
    import dask_histogram  # noqa: F401

    HAVE_DASK_AWKWARD = True
except ImportError:
    HAVE_DASK_AWKWARD = False

#: dask-awkward installed past its own cap (dask < 2025.4.0): measured with dask-awkward 2026.2.1 on dask 2026.8.0.
DASK_PAST_CAP = HAVE_DASK_AWKWARD and Version(dask.__version__) >= Version("2025.4.0")

needs_dask_awkward = pytest.mark.skipif(
    not HAVE_DASK_AWKWARD,
    reason="apply_to_fileset needs dask-awkward and dask-histogram: pip install -e '.[coffea-dask]'",
)
dask_past_cap = pytest.mark.xfail(
    DASK_PAST_CAP,
    raises=ValueError,
    strict=True,
    reason=f"dask-awkward requires dask<2025.4.0, dask {dask.__version__} is installed: its layer-chain "
    "optimisation (dask_awkward.lib.optimize.rewrite_layer_chains) fails with 'ValueError: Cannot fuse tasks "
    "with multiple outputs' from dask._task_spec.Task.fuse",
)


class Reference(NamedTuple):
    """What ``opendata-stats process`` wrote: the histograms and the number of events processed."""

    histograms: dict[str, hist.Hist]
    events: int


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[str]:
    dataset = generate_dataset(
        tmp_path_factory.mktemp("gen"), events=20_000, seed=19, signal_strength=20,
        periods=["data15_periodD", "data16_periodA"], basket_entries=4_000, workers=1,
    )  # fmt: skip
    return [str(path) for path in dataset.files]


@pytest.fixture(scope="module")
def reference(files, tmp_path_factory) -> Reference:
    """The project's engine, as a user runs it."""
    out = tmp_path_factory.mktemp("process")
    command = [sys.executable, "-m", "deploy.cli", "process", *files, "--workers", "0", "--chunksize", str(CHUNK),
               "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    summary = json.loads((out / "summary.json").read_text())
    histograms = read_histograms(out / "histograms.json")
    assert summary["complete"] and histograms["mass"].sum() > 500
    return Reference(histograms, summary["events_processed"])


def assert_as_process(output: dict[str, Any], reference: Reference) -> None:
    for name in ("mass", "cutflow"):
        assert output[name].values().tolist() == reference.histograms[name].values().tolist(), name
        assert output[name] == reference.histograms[name], name  # axes, labels, categories and storage too
    assert output["events"] == reference.events


def runner_output(files: list[str], executor: processor.executor.ExecutorBase) -> dict[str, Any]:
    runner = processor.Runner(executor=executor, schema=BaseSchema, chunksize=CHUNK)
    return runner({"data": files}, processor_instance=DiphotonProcessor(), treename="analysis")


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["iterative", "futures"])
def test_runner_gives_the_histograms_of_process(files, reference, executor):
    executors = {"iterative": processor.IterativeExecutor, "futures": lambda: processor.FuturesExecutor(workers=2)}
    assert_as_process(runner_output(files, executors[executor]()), reference)


def test_runner_on_dask_gives_the_histograms_of_process(files, reference, dask_scheduler_address):
    from distributed import Client

    with Client(dask_scheduler_address) as client:
        output = runner_output(files, processor.DaskExecutor(client=client, status=False))
    assert_as_process(output, reference)


def lazy_output(files: list[str]) -> dict[str, Any]:
    """``apply_to_fileset`` on the files, preprocessed into partitions of CHUNK entries, as a coffea-casa user does."""
    from coffea.dataset_tools import apply_to_fileset, preprocess
    from coffea.dataset_tools.filespec import DataGroupSpec

    fileset = DataGroupSpec.model_validate({"data": {"files": {path: "analysis" for path in files}}})
    available, _ = preprocess(fileset, step_size=CHUNK, scheduler="sync")
    return apply_to_fileset(DiphotonProcessor(), available, schemaclass=BaseSchema)


@needs_dask_awkward
@dask_past_cap
@pytest.mark.parametrize("scheduler", ["threads", "distributed"])
def test_apply_to_fileset_gives_the_histograms_of_process(files, reference, scheduler, request):
    import dask_awkward as dak
    import hist.dask

    lazy = lazy_output(files)["data"]
    assert isinstance(lazy["mass"], hist.dask.Hist) and isinstance(lazy["cutflow"], hist.dask.Hist)
    # Column projection: only the branches the selection reads are read, not the tree's ~80.
    [columns] = dak.necessary_columns(lazy["mass"], lazy["cutflow"]).values()
    assert columns == set(DiphotonProcessor.columns)
    if scheduler == "distributed":
        from distributed import Client

        with Client(request.getfixturevalue("dask_scheduler_address")):
            (output,) = dask.compute(lazy)
    else:
        (output,) = dask.compute(lazy, scheduler="threads")
    assert_as_process(output, reference)


def pinned_coffea_dask() -> list[str]:
    """The requirements of the ``coffea-dask`` extra, as pyproject.toml pins them."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"]["coffea-dask"])


@pytest.mark.slow
@pytest.mark.skipif(HAVE_DASK_AWKWARD, reason="dask-awkward is installed here: the apply_to_fileset tests run as is")
def test_apply_to_fileset_with_the_coffea_dask_extra(tmp_path):
    """Where the test environment lacks the ``coffea-dask`` extra (CI installs ``.[test]``, with today's dask), the
    extra's pinned dask / dask-awkward pair goes into an environment layered over this one (pip, its pins only; every
    other package is this environment's), and the apply_to_fileset tests above run there: the pair the README
    promises is checked on every CI run."""
    overlay = tmp_path / "coffea-dask"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(overlay)], check=True)
    python = str(overlay / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    import sysconfig
    from pathlib import Path

    # After the overlay's own packages: this environment's, for everything the pins do not replace.
    (Path(purelib) / "zz_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
                                *pinned_coffea_dask()], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    ran = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-m", "slow or not slow",
                          "-k", "test_apply_to_fileset_gives_the_histograms_of_process"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=900)
    assert ran.returncode == 0 and "2 passed" in ran.stdout, ran.stdout[-4000:] + ran.stderr[-2000:]
