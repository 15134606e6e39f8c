"""The project config file: defaults, the facility examples, merging, and one-line errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import deploy
from deploy.config import Settings, configure, defaults, load_config, merge, schema, settings_from_dict, validate
from deploy.errors import DeployError
from stats.likelihoods import HypotestSettings, default_backend

FACILITIES = Path(deploy.__file__).parent / "facilities"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_tutorial_values() -> None:
    settings = load_config()
    assert settings.cluster.kind == "local"
    assert settings.cluster.local.dashboard_address.startswith("127.0.0.1:")
    assert tuple(settings.selection) == (50.0, 30.0, 0.055, (1.37, 1.52), 0.35)
    assert tuple(settings.histogram) == (60, 100.0, 160.0)
    assert tuple(settings.fit) == (125.0, "auto", "robust", "chi2", 1.7)
    assert tuple(settings.mass_scan) == (110.0, 140.0, 25)
    assert tuple(settings.mass_patchset) == (110.0, 155.0, 46)  # 1 GeV steps, every peak inside the histogram
    assert tuple(settings.patchset)[:5] == (1.0, "qtilde", 600.0, "code4", "code4p")
    assert settings.patchset.hypotest_settings() == HypotestSettings(backend=default_backend())


def test_documented_default_file_matches_the_defaults() -> None:
    assert yaml.safe_load((FACILITIES / "default.yaml").read_text()) == defaults()
    assert load_config(FACILITIES / "default.yaml") == load_config()


@pytest.mark.parametrize(
    ("name", "kind"),
    [("laptop", "local"), ("coffea-casa", "scheduler"), ("htcondor", "htcondor"), ("dask-gateway", "gateway")],
)
def test_facility_examples_load(name: str, kind: str) -> None:
    settings = load_config(FACILITIES / f"{name}.yaml")
    assert isinstance(settings, Settings)
    assert settings.cluster.kind == kind


def test_coffea_casa_example_points_at_the_notebook_scheduler() -> None:
    assert load_config(FACILITIES / "coffea-casa.yaml").cluster.scheduler.address == "tls://localhost:8786"


def test_a_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, "histogram: {bins: 30}\ncluster: {local: {workers: 3}}\n"))
    assert tuple(settings.histogram) == (30, 100.0, 160.0)
    assert settings.cluster.local.workers == 3
    assert settings.cluster.local.threads_per_worker == 1
    assert settings.fit.degree == "auto"


def test_free_form_mappings_are_replaced_not_merged() -> None:
    merged = merge({"env": {"A": "1"}, "x": {"a": 1}}, {"env": {"B": "2"}, "x": {"b": 2}})
    assert merged == {"env": {"B": "2"}, "x": {"a": 1, "b": 2}}


def test_tls_settings_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cluster:\n  kind: scheduler\n  scheduler:\n    address: tls://h:8786\n"
        "    tls: {ca_file: ca.pem, cert: c.pem, key: k.pem}\n",
    )
    tls = load_config(path).cluster.scheduler.tls
    assert (tls.ca_file, tls.cert, tls.key, tls.require_encryption) == ("ca.pem", "c.pem", "k.pem", True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cluster: {workerz: 2}", "unknown key 'cluster.workerz'"),
        ("selection: {lead_pt: 40}", "unknown key 'selection.lead_pt'"),
        ("colour: red", "unknown key 'colour'"),
        ("cluster: {kind: kubernetes}", "bad value for 'cluster.kind'"),
        ("cluster: {local: {workers: 0}}", "bad value for 'cluster.local.workers'"),
        ("cluster: {local: {gc_threshold: 0}}", "bad value for 'cluster.local.gc_threshold'"),
        ("cluster: {local: {gc_threshold: rarely}}", "bad value for 'cluster.local.gc_threshold'"),
        ("cluster: {scheduler: {tls: {ca: x}}}", "unknown key 'cluster.scheduler.tls.ca'"),
        ("processing: {protocol: ftp}", "bad value for 'processing.protocol'"),
        ("processing: {chunksize: many}", "bad value for 'processing.chunksize'"),
        ("histogram: {low: 170}", "bad value for 'histogram.low'"),
        ("mass_scan: {points: 0}", "bad value for 'mass_scan.points'"),
        ("mass_patchset: {low: 150, high: 120}", "mass_patchset"),
        ("selection: {crack_eta: [1.52, 1.37]}", "bad value for 'selection.crack_eta'"),
        ("patchset: {test_stat: qmu}", "bad value for 'patchset.test_stat'"),
        ("patchset: {normsys: code2}", "bad value for 'patchset.normsys'"),
        ("- a list", "expected a mapping"),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DeployError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="cannot read config file .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"not valid YAML \(line 2\)"):
        load_config(write(tmp_path, "fit:\n\tmass: 125\n"))


def test_settings_from_dict_accepts_an_empty_mapping() -> None:
    assert settings_from_dict({}) == load_config()


def test_an_empty_file_and_the_packaged_default_file_give_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == load_config() == load_config(FACILITIES / "default.yaml")
    assert load_config(write(tmp_path, "")).fit.degree == "auto"


@pytest.mark.parametrize(("text", "degree"), [("fit: {degree: auto}", "auto"), ("fit: {degree: 5}", 5),
                                               ("fit: {degree: 0}", 0)])
def test_degree_is_an_integer_or_auto(tmp_path: Path, text: str, degree: object) -> None:
    assert load_config(write(tmp_path, text)).fit.degree == degree


@pytest.mark.parametrize("value", ["five", "11", "-1", "2.5", "Auto"])
def test_a_bad_degree_names_what_is_allowed(tmp_path: Path, value: str) -> None:
    with pytest.raises(DeployError) as caught:
        load_config(write(tmp_path, f"fit: {{degree: {value}}}"))
    assert "bad value for 'fit.degree'" in str(caught.value) and "'auto'" in str(caught.value)


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "fit: {mass: 120, degree: 3}\nhistogram: {bins: 30}\n")
    config = configure(path, {"fit.degree": 5, "histogram.bins": None}, flags={"fit.degree": "--degree"})
    assert config.settings.fit.degree == 5 and config.settings.fit.mass == 120.0
    assert config.settings.histogram.bins == 30  # a flag not given (None) leaves the file's value
    assert config.origin("fit.degree") == "flag --degree"
    assert config.origin("fit.mass") == f"config file {path}"
    assert config.origin("histogram.low") == "default"
    assert config.choices(["fit.degree"]) == {"fit.degree": {"value": 5, "origin": "flag --degree"}}


def test_a_bad_flag_value_is_one_line_naming_the_flag() -> None:
    with pytest.raises(DeployError) as caught:
        configure(None, {"mass_scan.points": 0}, flags={"mass_scan.points": "--points"})
    assert "--points" in str(caught.value) and "mass_scan.points" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_schema_is_a_packaged_file_that_requires_every_default() -> None:
    packaged = json.loads((Path(deploy.__file__).parent / "config.schema.json").read_text())
    assert packaged == schema()
    incomplete = defaults()
    del incomplete["fit"]["degree"]
    with pytest.raises(DeployError, match="degree"):
        validate(incomplete)
