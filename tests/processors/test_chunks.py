"""Reading chunks: ZLIB baskets inflated with isal, bit for bit as with zlib, and uproot's class names normalized once,
in this process and on workers."""

from __future__ import annotations

import isal.isal_zlib
import pytest
import uproot
from _photon_files import write_photon_file

from deploy.clusters import dask_client
from processors import chunks
from processors.engine import process_files
from processors.processor import DiphotonProcessor

DECOMPRESSOR = uproot.compression._decompress_ZLIB


@pytest.fixture(scope="module")
def zlib_file(tmp_path_factory):
    path = write_photon_file(tmp_path_factory.mktemp("zlib") / "z.root", 20_000, seed=7, parts=4)
    with uproot.open(path) as file:
        assert file.file.compression == uproot.ZLIB(1)  # uproot's default, as ROOT's
    return str(path)


@pytest.fixture
def inflations(monkeypatch):
    """Counts isal's inflate calls."""
    calls = []
    inflate = isal.isal_zlib.decompress

    def counting(*args, **kwargs):
        calls.append(1)
        return inflate(*args, **kwargs)

    monkeypatch.setattr(isal.isal_zlib, "decompress", counting)
    return calls


def test_importing_the_reader_switches_zlib_baskets_to_isal():
    assert chunks.ZLIB_LIBRARY == "isal" == DECOMPRESSOR.library
    assert uproot.ZLIB.library == "zlib"  # writing is left as it was


def test_isal_inflates_and_gives_the_histograms_of_zlib(zlib_file, inflations, monkeypatch):
    chunks.clear_trees()
    with_isal = process_files([zlib_file], processor=DiphotonProcessor(), chunksize=5_000, progress=False)
    assert len(inflations) >= 4 * 6  # at least a basket per part and branch read
    monkeypatch.setattr(DECOMPRESSOR, "library", "zlib")
    chunks.clear_trees()
    calls = len(inflations)
    with_zlib = process_files([zlib_file], processor=DiphotonProcessor(), chunksize=5_000, progress=False)
    chunks.clear_trees()
    assert len(inflations) == calls
    assert with_isal.events_processed == with_zlib.events_processed == 20_000
    assert with_isal.histograms["mass"] == with_zlib.histograms["mass"]
    assert with_isal.histograms["cutflow"] == with_zlib.histograms["cutflow"]
    assert with_isal.histograms["mass"].sum() > 0


def test_a_corrupt_zlib_basket_is_a_corrupt_chunk(zlib_file, tmp_path):
    with uproot.open(zlib_file) as file:
        branch = file["analysis"]["photon_pt"]
        seek, entries = int(branch.member("fBasketSeek")[1]), branch.basket_entry_start_stop(1)
        payload = seek + branch.basket_key(1).fKeylen + 9  # past the key and the 9-byte compression header
    data = bytearray(open(zlib_file, "rb").read())
    data[payload:payload + 64] = bytes(64)
    bad = tmp_path / "bad-basket.root"
    bad.write_bytes(bytes(data))
    result = process_files([str(bad)], processor=DiphotonProcessor(), chunksize=1, progress=False, strict=False)
    chunks.clear_trees()
    assert [(f.entry_start, f.entry_stop, f.kind) for f in result.failed_chunks] == [(*entries, "corrupt")]
    error = result.failed_chunks[0].error
    assert "bad-basket.root: not a readable ROOT file" in error and "\n" not in error
    assert result.events_processed + entries[1] - entries[0] == result.events_in_files == 20_000


def test_without_isal_zlib_stays(monkeypatch):
    monkeypatch.setattr(chunks, "isal_zlib", None)  # as when the import failed
    monkeypatch.setattr(DECOMPRESSOR, "library", "zlib")
    assert chunks.inflate_with_isal() == "zlib" == DECOMPRESSOR.library


def test_a_library_the_user_chose_is_kept(monkeypatch):
    monkeypatch.setattr(DECOMPRESSOR, "library", "deflate")
    assert chunks.inflate_with_isal() == "deflate" == DECOMPRESSOR.library


def test_class_names_are_normalized_once_as_uproot_normalizes_them(zlib_file):
    cached = uproot.model.classname_regularize
    assert chunks.CLASSNAMES_MEMOIZED and chunks.memoize_classnames()
    assert uproot.model.classname_regularize is cached  # not wrapped twice
    original = cached.__wrapped__
    for name in ("std::vector< float >", "vector<Float_t>", "map<Int_t,vector<Double_t> >", "TBranch", None):
        assert cached(name) == original(name)
    assert cached("vector<Float_t>") == "vector<float>"
    before = cached.cache_info().hits
    tree = chunks.open_tree(zlib_file, "analysis", tuple(DiphotonProcessor.columns), timeout=10)
    tree.file.close()
    assert cached.cache_info().hits > before + 80  # every branch description's class names came from the cache


def _zlib_library() -> str:
    return uproot.compression._decompress_ZLIB.library


def _classnames_memoized() -> bool:
    return hasattr(uproot.model.classname_regularize, "cache_info")


def test_dask_workers_inflate_with_isal_and_memoize_class_names():
    with dask_client(workers=2, announce=False) as client:
        assert set(client.run(_zlib_library).values()) == {"isal"}
        assert set(client.run(_classnames_memoized).values()) == {True}
