"""Tiny ROOT files with the GamGam photon branches, for tests that do not need the full generator."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import uproot


def photon_events(n: int, *, seed: int) -> ak.Array:
    """Random diphoton-like events with 1-4 pT-ordered photons each."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5, size=n)
    total = int(counts.sum())
    pt = rng.exponential(40.0, total) + 20.0
    eta = rng.uniform(-2.4, 2.4, total)
    phi = rng.uniform(-np.pi, np.pi, total)
    # Sort pT in decreasing order inside each event, like the release.
    order = np.lexsort((-pt, np.repeat(np.arange(n), counts)))
    pt = pt[order]
    return ak.zip(
        {
            "pt": ak.unflatten(pt.astype(np.float32), counts),
            "eta": ak.unflatten(eta.astype(np.float32), counts),
            "phi": ak.unflatten(phi.astype(np.float32), counts),
            "e": ak.unflatten((pt * np.cosh(eta)).astype(np.float32), counts),
            "isTightID": ak.unflatten(rng.random(total) < 0.9, counts),
            "ptcone20": ak.unflatten(rng.exponential(1.0, total).astype(np.float32), counts),
        }
    )


def write_photon_file(
    path: Path, n: int, *, seed: int, tree: str = "analysis", drop: tuple[str, ...] = (), parts: int = 2
) -> Path:
    """Write ``n`` events to ``path`` in ``parts`` baskets, optionally without some photon fields."""
    photons = photon_events(n, seed=seed)
    photons = photons[[f for f in photons.fields if f"photon_{f}" not in drop]]
    with uproot.recreate(path) as out:
        out.mktree(
            tree,
            {"photon": photons.type.content, "eventNumber": np.int64},
            counter_name=lambda counted: "photon_n",
        )
        edges = np.linspace(0, n, parts + 1).astype(int)
        for start, stop in zip(edges[:-1], edges[1:]):
            out[tree].extend({"photon": photons[start:stop], "eventNumber": np.arange(start, stop)})
    return path


def _not_root(path: Path) -> Path:
    path.write_text("not a ROOT file at all" * 20)
    return path


#: (make a bad file at a path, words its one-line error must contain), one per kind of bad input file.
BAD_FILES = {
    "missing": (lambda path: path, "No such file or directory"),
    "not-root": (_not_root, "not a ROOT file"),
    "missing-tree": (lambda path: write_photon_file(path, 10, seed=0, tree="events"), "no tree 'analysis'"),
    "missing-branch": (lambda path: write_photon_file(path, 10, seed=0, drop=("photon_ptcone20",)), "photon_ptcone20"),
}
