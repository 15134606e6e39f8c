"""The fit and scan-mass commands end to end on a toy processing directory."""

import json

import numpy as np
import pyhf
import pytest
from _toys import make_toy

from deploy.cli import main


@pytest.fixture()
def run_dir(tmp_path):
    toy = make_toy(seed=1, signal_yield=1800.0)
    (tmp_path / "summary.json").write_text(json.dumps(
        {"lumi_fb": 36.1, "cutflow": {}, "mass": {"edges": toy.edges.tolist(), "counts": toy.counts.tolist()}}))
    return tmp_path


def _run(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    return exit_info.value.code


@pytest.mark.slow
def test_fit_writes_results_workspace_and_plots(run_dir, capsys):
    assert _run(["fit", str(run_dir), "--mass", "125", "--degree", "auto"]) == 0
    out = capsys.readouterr().out
    assert "workspace significance: observed" in out and "POI: mu" in out
    record = json.loads((run_dir / "fit.json").read_text())
    rows = record["degree_scan"]
    assert [row["degree"] for row in rows] == [2, 3, 4, 5, 6]
    chosen = next(row["degree"] for row, nxt in zip(rows, rows[1:]) if not nxt["f_p_value"] < 0.05)
    assert record["degree"] == chosen and record["lumi_fb"] == 36.1
    assert abs(record["background_fit"]["signal_yield"] - 1800.0) < 3 * record["background_fit"]["signal_yield_unc"]
    assert record["significance"]["observed"] > 10 and record["profile_likelihood"]["status"] == "ok"
    pyhf.Workspace(json.loads((run_dir / "workspace.json").read_text()))
    for stem in ("fit", "degree_scan", "data_mc_prefit", "data_mc_postfit"):
        assert (run_dir / f"{stem}.png").stat().st_size > 0 and (run_dir / f"{stem}.pdf").stat().st_size > 0


@pytest.mark.slow  # about 3 s on 2 cores
def test_scan_mass_writes_every_point_and_exits_one_on_failures(run_dir, tmp_path, capsys):
    robust = ["scan-mass", str(run_dir), "--masses", "110:140:13", "--toys", "100", "--seed", "3",
              "--out", str(tmp_path / "robust")]
    assert _run(robust) == 0
    record = json.loads((tmp_path / "robust" / "mass_scan.json").read_text())
    assert len(record["points"]) == 13 and record["failed"] == 0 and record["wall_time"] > 0
    best = max(record["points"], key=lambda p: p["significance"])
    assert best["mass"] == 125.0
    assert (tmp_path / "robust" / "mass_scan.png").exists()
    lee = json.loads((tmp_path / "robust" / "look_elsewhere.json").read_text())["result"]
    assert lee["complete"] and lee["toys"]["toys"] == 100 and lee["identity"]["settings"]["seed"] == 3
    assert lee["observed"]["max_significance"] == pytest.approx(best["significance"], rel=1e-9)
    assert "global" in capsys.readouterr().out
    assert _run(robust) == 0  # a rerun reuses every batch of the same identity
    again = json.loads((tmp_path / "robust" / "look_elsewhere.json").read_text())["result"]
    assert again["batches"]["computed"] == 0 and again["toys"] == lee["toys"]

    assert _run(["scan-mass", str(run_dir), "--masses", "115", "--method", "tutorial", "--degree", "4",
                 "--toys", "0", "--out", str(tmp_path / "tutorial")]) == 1
    (point,) = json.loads((tmp_path / "tutorial" / "mass_scan.json").read_text())["points"]
    assert point["status"] == "failed" and "no parameter uncertainties" in point["error"]
    assert "failed at 115 GeV" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scan-mass", "{dir}", "--masses", "90:100:3"], "outside the histogram range"),
        (["scan-mass", "{dir}", "--masses", "abc"], "bad mass grid"),
        (["fit", "{dir}", "--mass", "200"], "outside the histogram range"),
    ],
)
def test_bad_input_is_one_line_exit_two(run_dir, capsys, argv, message):
    assert _run([arg.format(dir=run_dir) for arg in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_empty_histogram_is_rejected(tmp_path, capsys):
    (tmp_path / "summary.json").write_text(json.dumps({"mass": {"edges": list(np.linspace(100, 160, 61)),
                                                                "counts": [0.0] * 60}}))
    assert _run(["fit", str(tmp_path)]) == 2
    assert "histogram is empty" in capsys.readouterr().err
