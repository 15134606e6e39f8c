"""One source of defaults: `run` with and without the packaged default config, `fit` and `scan-mass` choose the
same degree and give the same significance on the same histogram, and flags override a config file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import deploy
from deploy.cli import cli
from stats.background import scan_degrees
from stats.spectrum import load_spectrum

DEFAULT_YAML = Path(deploy.__file__).parent / "facilities" / "default.yaml"


def invoke(argv: list[str]) -> str:
    done = CliRunner().invoke(cli, argv)
    assert done.exit_code == 0, done.output
    return done.output


@pytest.mark.parametrize("config", [None, "", "fit: {}\n", DEFAULT_YAML])
def test_run_takes_the_same_settings_with_or_without_a_config_file(tmp_path: Path, monkeypatch, config) -> None:
    import deploy.cli_pipeline
    import deploy.pipeline
    from deploy.config import load_config

    seen = []

    def fake_pipeline(out, *, configuration, **kwargs):  # the settings run would compute with, nothing else
        seen.append(configuration.settings)
        raise SystemExit(0)

    monkeypatch.setattr(deploy.pipeline, "run_pipeline", fake_pipeline)  # run imports it when it runs
    monkeypatch.setattr(deploy.cli_pipeline, "dask_or_local", lambda *a, **k: __import__("contextlib").nullcontext())
    argv = ["run", "--out", str(tmp_path / "out")]
    if config is not None:
        path = config if isinstance(config, Path) else tmp_path / "config.yaml"
        if not isinstance(config, Path):
            path.write_text(config)
        argv += ["--config", str(path)]
    CliRunner().invoke(cli, argv)
    assert seen == [load_config()] and seen[0].fit.degree == "auto"


@pytest.mark.slow
def test_run_fit_and_scan_mass_choose_the_same_degree_and_significance(tmp_path: Path) -> None:
    out, data = tmp_path / "out", tmp_path / "data"
    common = ["--out", str(out), "--data-dir", str(data), "--scale", "0.03", "--seed", "7", "--workers", "1",
              "--masses", "125", "--no-progress"]
    invoke(["run", *common])
    plain = json.loads((out / "results.json").read_text())
    invoke(["run", "--config", str(DEFAULT_YAML), *common])
    configured = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()

    invoke(["fit", str(out / "processing"), "--out", str(tmp_path / "fit")])
    fitted = json.loads((tmp_path / "fit" / "fit.json").read_text())
    invoke(["scan-mass", str(out / "processing"), "--masses", "125", "--out", str(tmp_path / "scan")])
    scanned = json.loads((tmp_path / "scan" / "mass_scan.json").read_text())

    spectrum = load_spectrum(out / "processing")
    expected = scan_degrees(spectrum.counts, spectrum.edges, mass=125.0).best_degree
    assert expected != 4  # this histogram tells the F-test choice from a fixed degree 4
    assert plain["fit"]["degree"] == configured["fit"]["degree"] == fitted["degree"] == scanned["degree"] == expected

    significance = plain["fit"]["profile_likelihood"]["significance"]
    assert significance > 0
    assert configured["fit"]["profile_likelihood"]["significance"] == pytest.approx(significance, rel=1e-9)
    assert fitted["profile_likelihood"]["significance"] == pytest.approx(significance, rel=1e-9)
    assert scanned["points"][0]["significance"] == pytest.approx(significance, rel=1e-9)
    assert configured["fit"]["significance"]["observed"] == pytest.approx(plain["fit"]["significance"]["observed"],
                                                                          rel=1e-9)
    assert fitted["significance"]["observed"] == pytest.approx(plain["fit"]["significance"]["observed"], rel=1e-9)

    assert plain["settings"]["fit.degree"] == {"value": "auto", "origin": "default"}
    assert configured["settings"]["fit.degree"] == {"value": "auto", "origin": f"config file {DEFAULT_YAML}"}
    assert configured["settings"]["dataset.scale"] == {"value": 0.03, "origin": "flag --scale"}
    assert configured["fit"]["degree_choice"] == {"requested": "auto", "chosen": expected,
                                                  "by": "F-test over degrees 2, 3, 4, 5, 6"}
    assert f"| `fit.degree` | auto: {expected} (F-test over degrees 2, 3, 4, 5, 6) | config file {DEFAULT_YAML} |" in report
    assert f"Polynomial degree {expected} (F-test" in report


@pytest.fixture()
def spectrum_dir(tmp_path: Path) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stats"))
    from _toys import make_toy

    toy = make_toy(seed=1, signal_yield=1800.0)
    (tmp_path / "summary.json").write_text(json.dumps(
        {"lumi_fb": 36.1, "cutflow": {}, "mass": {"edges": toy.edges.tolist(), "counts": toy.counts.tolist()}}))
    return tmp_path


@pytest.mark.slow
def test_flags_override_the_config_file_in_fit_and_scan_mass(spectrum_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "analysis.yaml"
    config.write_text("fit: {degree: 3, mass: 124}\nmass_scan: {low: 120, high: 130, points: 3}\n")
    invoke(["fit", str(spectrum_dir), "--config", str(config), "--out", str(tmp_path / "a")])
    from_file = json.loads((tmp_path / "a" / "fit.json").read_text())
    assert (from_file["degree"], from_file["mass"]) == (3, 124.0)
    assert from_file["degree_choice"] == {"requested": 3, "chosen": 3, "by": "setting"}
    invoke(["fit", str(spectrum_dir), "--config", str(config), "--degree", "5", "--out", str(tmp_path / "b")])
    assert json.loads((tmp_path / "b" / "fit.json").read_text())["degree"] == 5

    invoke(["scan-mass", str(spectrum_dir), "--config", str(config), "--out", str(tmp_path / "c")])
    scanned = json.loads((tmp_path / "c" / "mass_scan.json").read_text())
    assert [p["mass"] for p in scanned["points"]] == [120.0, 125.0, 130.0] and scanned["degree"] == 3
    invoke(["scan-mass", str(spectrum_dir), "--config", str(config), "--degree", "auto", "--masses", "125",
            "--out", str(tmp_path / "d")])
    auto = json.loads((tmp_path / "d" / "mass_scan.json").read_text())
    spectrum = load_spectrum(spectrum_dir)
    assert auto["degree"] == scan_degrees(spectrum.counts, spectrum.edges, mass=124.0).best_degree


@pytest.mark.parametrize("command", ["fit", "scan-mass"])
def test_a_bad_degree_is_one_error_line(spectrum_dir: Path, tmp_path: Path, command: str, capsys) -> None:
    from deploy.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text("fit: {degree: 11}\n")
    with pytest.raises(SystemExit) as exited:
        main([command, str(spectrum_dir), "--config", str(config)])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "\n" not in err
    assert err.startswith("error: config file") and "'fit.degree'" in err and "'auto'" in err
