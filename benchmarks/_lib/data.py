"""The data the benchmarks measure on: generated GamGam file sets (created once, reused), a toy spectrum, the
published 1Lbb likelihoods."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Where the processing benchmarks keep their file sets (``--data``); each layout in a folder beside it.
PROCESSING_DATA = Path("/tmp/opendata-stats-bench/processing")
#: The checkout's ``../shared/data``: the 1Lbb likelihoods and pyhf's reference CLs.
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
#: File layouts, as (periods, basket compression): the release's (one file per data-taking period, most of them
#: small) and a single file (where decompression, not opening 16 files, dominates a bare read); ``-zlib``: the
#: same files compressed as ROOT does by default (ZLIB(1)), which inflate slower than the generator's LZ4.
LAYOUTS: dict[str, tuple[list[str] | None, str]] = {
    "release": (None, "default"),
    "single": (["data16_periodL"], "default"),
    "release-zlib": (None, "zlib"),
    "single-zlib": (["data16_periodL"], "zlib"),
}


def processing_dataset(directory: Path, events: int, layout: str = "release") -> list[str]:
    """The processing benchmarks' files of ``layout`` (``directory``, or ``directory-LAYOUT`` beside it), generated
    once (seed 2016, 100k-entry baskets) and reused while the event count matches."""
    import uproot

    from processors.generate import DEFAULT_COMPRESSION, generate_dataset

    directory = directory if layout == "release" else directory.with_name(f"{directory.name}-{layout}")
    marker = directory / f"events-{events}"
    if not marker.exists():
        periods, codec = LAYOUTS[layout]
        generate_dataset(directory, events=events, seed=2016, basket_entries=100_000, periods=periods,
                         compression=uproot.ZLIB(1) if codec == "zlib" else DEFAULT_COMPRESSION)
        marker.touch()
    return sorted(str(p) for p in directory.glob("*.root"))


def served_dataset(directory: Path, events: int) -> list[str]:
    """:func:`processing_dataset`'s release files, readable by an XRootD daemon's user (nobody) in place."""
    files = processing_dataset(directory, events)
    for path in [directory, *directory.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return files


def luminosity_dataset(data_dir: Path, *, lumi: float, scale: float, seed: int) -> tuple[list[str], float | None]:
    """The files of ``generate_dataset(lumi_fb=lumi, scale=scale, seed=seed)`` (16 files, the generator's defaults),
    generated into a folder of ``data_dir`` the first time: (files, seconds it took, or None when cached)."""
    import time

    from processors.generate import generate_dataset

    directory = data_dir / f"lumi{lumi:g}-scale{scale:g}-seed{seed}"
    seconds = None
    if not (directory / "truth.json").exists():  # written last: its presence means a complete set
        start = time.perf_counter()
        generate_dataset(directory, lumi_fb=lumi, scale=scale, seed=seed)
        seconds = time.perf_counter() - start
    return sorted(str(p) for p in directory.glob("*.root")), seconds


def page_cache(files: Iterable[str]) -> None:
    """Read the files once so that a measurement starts from the page cache, not the disk."""
    for path in files:
        with open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass


def branch_bytes(files: Iterable[str | os.PathLike[str]], branches: Iterable[str], *, tree: str | None = None
                 ) -> tuple[int, int]:
    """Compressed and uncompressed bytes of ``branches`` over ``files`` (what reading them whole costs)."""
    import uproot

    from processors.schema import TREE_NAME

    compressed = uncompressed = 0
    branches = list(branches)
    for path in files:
        with uproot.open(path) as file:
            ttree = file[tree or TREE_NAME]
            for name in branches:
                compressed += ttree[name].compressed_bytes
                uncompressed += ttree[name].uncompressed_bytes
    return compressed, uncompressed


def toy_spectrum(seed: int = 2026, high: float = 160.0) -> Any:
    """A seeded toy of the tutorial's size: 1e5 continuum events in 100-160 GeV and 1800 signal events at 125.09
    GeV, in 1 GeV bins from 100 GeV to ``high`` (the continuum's falling shape goes on past 160 GeV)."""
    import numpy as np
    import scipy.special

    from stats.spectrum import Spectrum

    edges = np.linspace(100.0, high, round(high - 100.0) + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    shape = np.exp(-(centres - 100.0) / 30.0)
    expected = 1e5 * shape / shape[centres < 160.0].sum() + 1800.0 * np.diff(scipy.special.ndtr((edges - 125.09) / 1.7))
    return Spectrum(np.random.default_rng(seed).poisson(expected).astype(float), edges, 36.1)


#: How the documents describe :func:`toy_spectrum`'s input.
TOY_SPECTRUM = "a seeded toy (1e5 continuum + 1800 signal events, 60 bins)"
