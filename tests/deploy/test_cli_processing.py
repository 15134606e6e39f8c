"""``opendata-stats process``: outputs, exit statuses and one-line errors."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import requests
import uproot

from deploy.cli import main
from processors.histograms import read_histograms

sys.path.insert(0, str(Path(__file__).parents[1] / "processors"))
from _photon_files import BAD_FILES, _not_root, write_photon_file  # noqa: E402


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("inputs")
    files = [write_photon_file(directory / f"f{i}.root", 20_000, seed=i) for i in range(2)]
    (directory / "truth.json").write_text(json.dumps({"lumi_fb": 2.0}))
    return files


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code, capsys.readouterr().err


def succeed(argv, capsys):
    main(argv)
    return capsys.readouterr().err


def test_process_writes_histograms_and_summary(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    succeed(["process", *map(str, inputs), "--workers", "0", "--fraction", "0.5", "--no-progress", "--out", str(out)], capsys)
    summary = json.loads((out / "summary.json").read_text())
    histograms = read_histograms(out / "histograms.json")
    assert summary["events_in_files"] == summary["events_processed"] == 20_000
    assert summary["lumi_fb"] == pytest.approx(1.0)  # truth.json's 2 fb^-1, half processed
    assert summary["failed_chunks"] == []
    assert summary["mass"]["counts"] == histograms["mass"].project("mass").values().tolist()
    assert summary["cutflow"]["all"] == 20_000 and summary["cutflow"]["mass_window"] == histograms["mass"].sum()


def test_dask_workers_give_the_same_summary(inputs, tmp_path, capsys):
    for workers in ("0", "2"):
        succeed(["process", *map(str, inputs), "--workers", workers, "--no-progress", "--out", str(tmp_path / workers)], capsys)
    summaries = [json.loads((tmp_path / w / "summary.json").read_text()) for w in ("0", "2")]
    assert summaries[0]["mass"] == summaries[1]["mass"] and summaries[0]["cutflow"] == summaries[1]["cutflow"]


def test_failed_chunks_exit_1_after_saving_and_resume_completes(inputs, tmp_path, capsys):
    broken = tmp_path / "broken.root"
    broken.write_text("x" * 1000)
    argv = ["process", str(inputs[0]), str(broken), "--workers", "0", "--no-progress", "--out", str(tmp_path / "o")]
    status, err = run([*argv, "--skip-bad-files"], capsys)
    assert status == 1 and "1 chunk(s) failed (1 corrupt)" in err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["events_processed"] == 20_000 and summary["failed_chunks"][0]["file"] == str(broken)

    broken.write_bytes(inputs[1].read_bytes())
    succeed([*argv, "--resume"], capsys)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["chunks"] == 2 and summary["resumed_chunks"] == 1 and summary["events_processed"] == 40_000


@pytest.mark.parametrize(("make", "message"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_input_files_exit_2_with_one_line(tmp_path, capsys, make, message):
    bad = make(tmp_path / "bad.root")
    status, err = run(["process", str(bad), "--workers", "0", "--no-progress", "--out", str(tmp_path / "o")], capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err


def test_unknown_skim_exits_2(inputs, tmp_path, capsys):
    from processors.datasets import write_metadata

    metadata = write_metadata(inputs, tmp_path / "metadata.json")
    status, err = run(["process", "--metadata", str(metadata), "--skim", "4lep", "--out", str(tmp_path / "o")], capsys)
    assert status == 2 and "error: cannot resolve skim '4lep'" in err


def test_unreachable_api_exits_2(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise requests.exceptions.ConnectionError("no route to host")

    monkeypatch.setattr(requests.Session, "request", refuse)
    status, err = run(["process", "--release", "2025e-13tev-beta", "--out", str(tmp_path / "o")], capsys)
    assert status == 2 and "error: cannot reach the ATLAS Open Data API" in err and "--metadata FILE" in err


def tree_bytes(directory):
    return {str(path.relative_to(directory)): path.read_bytes() for path in Path(directory).rglob("*") if path.is_file()}


def unchanged(before, after):
    """Every earlier file is there with the same bytes (a run may add checkpoints of its own, never alter one)."""
    return {name: after.get(name) for name in before} == before


@pytest.fixture
def good_result(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    succeed(["process", *map(str, inputs), "--workers", "0", "--chunksize", "5000", "--no-progress", "--out", str(out)], capsys)
    before = tree_bytes(out)
    assert len([name for name in before if name.startswith("checkpoint/chunk-")]) == 4  # 2 clusters a file
    return out, before


def truncated_copy(source, path):
    data = Path(source).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("case", ["not-root", "not-root-skipped", "truncated", "truncated-with-good"])
def test_a_failing_run_leaves_the_earlier_outputs_byte_for_byte(inputs, good_result, tmp_path, capsys, case):
    out, before = good_result
    bad = tmp_path / "bad.root"
    if case.startswith("not-root"):
        _not_root(bad)
    else:
        truncated_copy(inputs[1], bad)
    argv = ["process", str(bad), "--workers", "0", "--chunksize", "5000", "--no-progress", "--out", str(out)]
    if case == "truncated-with-good":
        argv.insert(1, str(inputs[0]))
    status, err = run([*argv, "--skip-bad-files"] if case == "not-root-skipped" else argv, capsys)
    after = tree_bytes(out)
    assert unchanged(before, after) and "Traceback" not in err
    if case == "not-root":
        assert status == 2 and err.count("error:") == 1 and "not a ROOT file" in err
        assert after == before
        return
    assert status == 1 and err.count("error:") == 1
    assert f"the complete result in {out / 'summary.json'} is kept" in err
    partial = json.loads((out / "summary.partial.json").read_text())
    assert partial["complete"] is False and partial["failed_chunks"] and partial["files"][-1] == str(bad)
    assert read_histograms(out / "histograms.partial.json")["mass"].sum() == sum(partial["mass"]["counts"])


def test_a_partial_run_writes_its_result_where_there_was_none_or_a_partial_one(inputs, tmp_path, capsys):
    out, bad = tmp_path / "out", _not_root(tmp_path / "bad.root")
    argv = ["process", str(inputs[0]), str(bad), "--workers", "0", "--no-progress", "--skip-bad-files", "--out", str(out)]
    for _ in range(2):
        status, _err = run(argv, capsys)
        summary = json.loads((out / "summary.json").read_text())
        assert status == 1 and summary["complete"] is False and summary["events_processed"] == 20_000
        assert not (out / "summary.partial.json").exists()


SIGTERMED = "import sys; from deploy.cli import main; main(sys.argv[1:])"


@pytest.mark.slow
def test_sigterm_during_a_run_leaves_the_earlier_outputs_byte_for_byte(inputs, tmp_path, capsys):
    """A run of other settings into the folder is stopped by SIGTERM once it has checkpointed a chunk."""
    out, big = tmp_path / "out", [write_photon_file(tmp_path / f"big{i}.root", 200_000, seed=7 + i, parts=200) for i in range(2)]
    files = [*map(str, inputs), *map(str, big)]
    succeed(["process", *files, "--workers", "0", "--chunksize", "1", "--no-progress", "--out", str(out)], capsys)
    before = tree_bytes(out)
    argv = [sys.executable, "-c", SIGTERMED, "process", *files, "--bins", "30", "--workers", "0", "--chunksize", "1",
            "--no-progress", "--out", str(out)]
    run_ = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(list((out / "checkpoint").glob("chunk-*.pkl"))) == len(before) - 2 and run_.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        run_.send_signal(signal.SIGTERM)
        _, err = run_.communicate(timeout=60)
    finally:
        run_.kill()
    assert run_.returncode == 143 and "error: interrupted by SIGTERM" in err and "Traceback" not in err, err
    after = tree_bytes(out)
    assert unchanged(before, after) and len(after) > len(before)  # its own checkpoints added, for --resume
    assert not [name for name in after if name.endswith(".tmp")]

    resumed = succeed(["process", *files, "--bins", "30", "--workers", "0", "--chunksize", "1", "--resume",
                       "--no-progress", "--out", str(out)], capsys)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and 0 < summary["resumed_chunks"] < summary["chunks"]
    assert f"note: kept {len(before) - 2} checkpoint(s)" in resumed and "processor settings (bins 60 -> 30)" in resumed


def test_resume_after_an_input_changed_gives_the_new_numbers(inputs, tmp_path, capsys):
    files = [Path(shutil.copy(f, tmp_path / f.name)) for f in inputs]
    argv = ["process", *map(str, files), "--workers", "0", "--chunksize", "5000", "--no-progress"]
    succeed([*argv, "--out", str(tmp_path / "out")], capsys)
    write_photon_file(files[1], 15_000, seed=42)  # new data under the old name
    err = succeed([*argv, "--resume", "--out", str(tmp_path / "out")], capsys)
    succeed([*argv, "--out", str(tmp_path / "fresh")], capsys)
    resumed, fresh = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("out", "fresh"))
    assert resumed["mass"] == fresh["mass"] and resumed["cutflow"] == fresh["cutflow"]
    assert resumed["events_processed"] == 35_000 and resumed["resumed_chunks"] == 2
    assert "f1.root has changed" in err and "note: kept 2 checkpoint(s)" in err
    expected = [{"file": str(f), "size": f.stat().st_size, "uuid": str(uproot.open(f).file.uuid)} for f in files]
    assert resumed["inputs"]["files"] == expected and resumed["inputs"]["version"] == version("opendata-stats")
    assert resumed["inputs"]["config"]["bins"] == 60
    histograms = json.loads((tmp_path / "out" / "histograms.json").read_text())
    assert {h["metadata"]["inputs_digest"] for h in histograms.values()} == {resumed["inputs_digest"]}
