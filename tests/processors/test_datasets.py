"""Dataset resolution: offline metadata files, paths, and an unreachable API; the inputs' luminosity."""

from __future__ import annotations

import json
import shutil

import pytest
import requests

from processors.datasets import Luminosity, luminosity, resolve_files, write_metadata
from processors.errors import DatasetResolutionError
from processors.generate import generate_dataset


@pytest.fixture
def metadata(tmp_path):
    return write_metadata([tmp_path / "a.root", "root://eospublic.cern.ch:1094//eos/opendata/b.root"], tmp_path / "metadata.json")


def test_offline_metadata_lists_the_skims_files(metadata, tmp_path):
    assert resolve_files(metadata=metadata) == [
        str((tmp_path / "a.root").resolve()), "root://eospublic.cern.ch:1094//eos/opendata/b.root"
    ]


def test_https_urls_are_streamed_not_cached(metadata):
    files = resolve_files(metadata=metadata, protocol="https")
    assert files[1].startswith("https://") and not any("simplecache" in f for f in files)


def test_paths_are_used_as_given():
    assert resolve_files(paths=["x.root", "root://host//y.root"]) == ["x.root", "root://host//y.root"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"skim": "2muons"}, "skim '2muons'.*Available skims: GamGam"),
        ({"protocol": "ftp"}, "unknown protocol 'ftp'"),
    ],
)
def test_bad_requests_are_one_line_errors(metadata, options, message):
    with pytest.raises(DatasetResolutionError, match=message) as error:
        resolve_files(metadata=metadata, **options)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), ("{not json", "not valid JSON"), ("[1, 2]", "not atlasopenmagic metadata"),
     ('{"data": 5}', "not atlasopenmagic metadata")],
)
def test_bad_metadata_files(tmp_path, content, message):
    path = tmp_path / "metadata.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DatasetResolutionError, match=message):
        resolve_files(metadata=path)


def test_exactly_one_source(metadata):
    with pytest.raises(DatasetResolutionError, match="exactly one"):
        resolve_files()
    with pytest.raises(DatasetResolutionError, match="got paths, metadata"):
        resolve_files(metadata=metadata, paths=["x.root"])


def test_unknown_release():
    with pytest.raises(DatasetResolutionError, match="Invalid release 'no-such-release'"):
        resolve_files(release="no-such-release")


def test_unreachable_api_suggests_offline_use(monkeypatch):
    def refuse(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to establish a new connection")

    # Every HTTP request atlasopenmagic makes goes through a requests Session.
    monkeypatch.setattr(requests.Session, "request", refuse)
    with pytest.raises(DatasetResolutionError, match=r"cannot reach the ATLAS Open Data API .*--metadata FILE"):
        resolve_files(release="2025e-13tev-beta")


@pytest.fixture(scope="module")
def quarter(tmp_path_factory):
    """``generate --scale 0.25`` at a tenth of the nominal luminosity: 0.9025 fb^-1 in 16 files."""
    return generate_dataset(tmp_path_factory.mktemp("quarter") / "data", lumi_fb=3.61, scale=0.25, seed=4)


def test_the_luminosity_of_generated_files_is_their_truth_json(quarter, tmp_path):
    elsewhere = write_metadata(quarter.files, tmp_path / "metadata.json")  # metadata away from the data
    found = luminosity([str(f) for f in quarter.files], metadata=elsewhere)
    assert found == Luminosity(quarter.truth["lumi_fb"], str(quarter.truth_path))
    assert found.lumi_fb == pytest.approx(3.61 * 0.25)


def test_some_of_the_generated_files_count_their_periods_share(quarter, tmp_path):
    periods = ["data15_periodD", "data16_periodC", "data16_periodL"]
    chosen = [str(f) for f in quarter.files if any(p in f.name for p in periods)]
    alone = generate_dataset(tmp_path / "alone", lumi_fb=3.61, scale=0.25, periods=periods, seed=4)
    assert len(chosen) == 3 and luminosity(chosen).lumi_fb == pytest.approx(alone.truth["lumi_fb"], rel=1e-12)


def test_some_files_of_a_truth_without_shares_are_refused(tmp_path):
    data = generate_dataset(tmp_path / "data", events=4_000, periods=["data15_periodD", "data15_periodE"], seed=1)
    with pytest.raises(DatasetResolutionError, match="the inputs are 1 of the 2 files .* --lumi"):
        luminosity([str(data.files[0])])
    assert luminosity([str(f) for f in data.files]).lumi_fb == data.truth["lumi_fb"]


def test_a_truth_json_of_other_files_is_not_used(quarter, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "truth.json").write_text(json.dumps({"lumi_fb": 1.0, "files": ["x.root"]}))
    found = luminosity([str(f) for f in quarter.files], metadata=other / "metadata.json")
    assert found.lumi_fb == quarter.truth["lumi_fb"]
    copied = [shutil.copy(f, other / f.name) for f in quarter.files[:2]]  # release names, no truth of their own
    found = luminosity(copied)
    assert found.lumi_fb == pytest.approx(0.1 + 0.5) and "periods" in found.source
