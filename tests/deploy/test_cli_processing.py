"""``opendata-stats process``: outputs, exit statuses and one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import requests

from deploy.cli import main
from processors.histograms import read_histograms

sys.path.insert(0, str(Path(__file__).parents[1] / "processors"))
from _photon_files import BAD_FILES, write_photon_file  # noqa: E402


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
    from processors.generate import write_metadata

    metadata = write_metadata(inputs, tmp_path / "metadata.json")
    status, err = run(["process", "--metadata", str(metadata), "--skim", "4lep", "--out", str(tmp_path / "o")], capsys)
    assert status == 2 and "error: cannot resolve skim '4lep'" in err


def test_unreachable_api_exits_2(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise requests.exceptions.ConnectionError("no route to host")

    monkeypatch.setattr(requests.Session, "request", refuse)
    status, err = run(["process", "--release", "2025e-13tev-beta", "--out", str(tmp_path / "o")], capsys)
    assert status == 2 and "error: cannot reach the ATLAS Open Data API" in err and "--metadata FILE" in err
