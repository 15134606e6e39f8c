"""Reading chunks with the project's uproot settings (:func:`processors.tuning.configure_uproot`): ZLIB baskets
inflated with isal, bit for bit as with zlib, uproot's class names normalized once and the XRootD client's
settings, in this process and on workers; nothing of it on import, and all of it undone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import isal.isal_zlib
import pytest
import uproot
from _photon_files import write_photon_file

from deploy.clusters import dask_client
from processors import chunks, tuning
from processors.engine import process_files
from processors.processor import DiphotonProcessor
from processors.tuning import XROOTD_CLIENT_ENV, configure_uproot

DECOMPRESSOR = uproot.compression._decompress_ZLIB
#: uproot's own class-name function, whatever this process did to it already.
REGULARIZE = getattr(uproot.model.classname_regularize, "__wrapped__", uproot.model.classname_regularize)


@pytest.fixture
def as_installed(monkeypatch):
    """uproot as installed (zlib, no cached class names) and no XRD_* variables, put back after the test."""
    monkeypatch.setattr(DECOMPRESSOR, "library", "zlib")
    monkeypatch.setattr(uproot.model, "classname_regularize", REGULARIZE)
    for name in XROOTD_CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)


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


IMPORTS = """
import os, sys, uproot
import processors.chunks, processors.engine, processors.tuning, deploy.xrootd
regularize = uproot.model.classname_regularize
print(uproot.compression._decompress_ZLIB.library, hasattr(regularize, "cache_info"),
      sorted(name for name in os.environ if name.startswith("XRD_")))
"""


def test_importing_the_engine_changes_nothing():
    env = {name: value for name, value in os.environ.items() if not name.startswith("XRD_")}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(IMPORTS)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["zlib", "False", "[]"]


def test_configure_uproot_switches_zlib_baskets_to_isal_and_undo_puts_everything_back(as_installed):
    with configure_uproot() as configured:
        assert configured.inflater == "isal" == DECOMPRESSOR.library
        assert uproot.ZLIB.library == "zlib"  # writing is left as it was
        assert configured.memoized and uproot.model.classname_regularize.__wrapped__ is REGULARIZE
        assert {name: os.environ[name] for name in XROOTD_CLIENT_ENV} == XROOTD_CLIENT_ENV
        assert set(configured.changed) == {"inflater", "classnames", *XROOTD_CLIENT_ENV}
        with configure_uproot() as again:  # already so: nothing changed, nothing to undo
            assert again.changed == {} and again.inflater == "isal" and again.memoized
        assert DECOMPRESSOR.library == "isal" and hasattr(uproot.model.classname_regularize, "cache_info")
    assert DECOMPRESSOR.library == "zlib" and uproot.model.classname_regularize is REGULARIZE
    assert not any(name in os.environ for name in XROOTD_CLIENT_ENV)


def test_the_users_xrootd_settings_win(as_installed, monkeypatch):
    monkeypatch.setenv("XRD_CONNECTIONWINDOW", "3")
    with configure_uproot(inflater=None, memoize_classnames=False) as configured:
        assert os.environ["XRD_CONNECTIONWINDOW"] == "3" and os.environ["XRD_STREAMERRORWINDOW"] == "1"
        assert "XRD_CONNECTIONWINDOW" not in configured.changed and DECOMPRESSOR.library == "zlib"
    assert os.environ["XRD_CONNECTIONWINDOW"] == "3" and "XRD_STREAMERRORWINDOW" not in os.environ


def test_an_uproot_outside_the_known_versions_is_left_as_it_is(as_installed, monkeypatch):
    monkeypatch.setattr(uproot, "__version__", "6.0.0")
    assert not tuning.uproot_supported() and tuning.uproot_supported("5.7.7")
    with pytest.warns(RuntimeWarning, match="uproot 6.0.0"), configure_uproot(xrootd=False) as configured:
        assert configured.changed == {} and DECOMPRESSOR.library == "zlib"
        assert uproot.model.classname_regularize is REGULARIZE


def test_isal_inflates_and_gives_the_histograms_of_zlib(zlib_file, inflations, as_installed, monkeypatch):
    chunks.clear_trees()
    with_isal = process_files([zlib_file], processor=DiphotonProcessor(), chunksize=5_000, progress=False)
    assert len(inflations) >= 4 * 6  # at least a basket per part and branch read
    assert DECOMPRESSOR.library == "zlib"  # the run's settings end with it
    monkeypatch.setattr(tuning, "isal_available", lambda: False)  # as when isal is not installed
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


def test_without_isal_zlib_stays(as_installed, monkeypatch):
    monkeypatch.setattr(tuning, "isal_available", lambda: False)  # as when the import fails
    with configure_uproot() as configured:
        assert configured.inflater == "zlib" == DECOMPRESSOR.library and "inflater" not in configured.changed


def test_a_library_the_user_chose_is_kept(as_installed, monkeypatch):
    monkeypatch.setattr(DECOMPRESSOR, "library", "deflate")
    with configure_uproot() as configured:
        assert configured.inflater == "deflate" == DECOMPRESSOR.library


def test_class_names_are_normalized_once_as_uproot_normalizes_them(zlib_file, as_installed):
    with configure_uproot():
        cached = uproot.model.classname_regularize
        with configure_uproot():
            assert uproot.model.classname_regularize is cached  # not wrapped twice
        for name in ("std::vector< float >", "vector<Float_t>", "map<Int_t,vector<Double_t> >", "TBranch", None):
            assert cached(name) == REGULARIZE(name)
        assert cached("vector<Float_t>") == "vector<float>"
        before = cached.cache_info().hits
        tree = chunks.open_tree(zlib_file, "analysis", tuple(DiphotonProcessor.columns), timeout=10)
        tree.file.close()
        assert cached.cache_info().hits > before + 80  # every branch description's class names came from the cache


def _settings() -> tuple[str, bool, dict[str, str]]:
    return (uproot.compression._decompress_ZLIB.library, hasattr(uproot.model.classname_regularize, "cache_info"),
            {name: os.environ.get(name) for name in XROOTD_CLIENT_ENV})


@pytest.mark.slow
def test_dask_workers_read_with_the_settings_from_their_start():
    # The worker plugin configures each worker before its first task (nothing else has run there).
    with dask_client(workers=2, announce=False) as client:
        assert list(client.run(_settings).values()) == [("isal", True, XROOTD_CLIENT_ENV)] * 2
