"""Dataset resolution: offline metadata files, paths, and an unreachable API."""

from __future__ import annotations

import pytest
import requests

from processors.datasets import resolve_files
from processors.errors import DatasetResolutionError
from processors.generate import write_metadata


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
