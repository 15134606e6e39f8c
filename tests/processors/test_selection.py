"""The diphoton cuts on a handful of hand-written events."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from processors import selection
from processors.selection import CUT_NAMES, Cuts, PhotonPair


def pair(lead, sublead):
    return PhotonPair(np.array(lead, dtype=float), np.array(sublead, dtype=float))


def events(photons):
    """Events from lists of photons (pt, eta, phi, e, tight, ptcone20), as the release's branches."""
    columns = {name: [] for name in selection.PHOTON_BRANCHES}
    for event in photons:
        for name, index in zip(selection.PHOTON_BRANCHES, range(6)):
            columns[name].append([photon[index] for photon in event])
    return {name: ak.Array(values) for name, values in columns.items()}


def massless(pt, eta, phi, tight=True, ptcone=0.0):
    return (pt, eta, phi, pt * np.cosh(eta), tight, ptcone)


def test_leading_pair_skips_events_with_fewer_than_two():
    array = ak.Array([[5.0, 4.0, 1.0], [3.0], [], [2.0, 1.0]])
    lead, sublead = selection.leading_pair(array)
    assert lead.tolist() == [5.0, 2.0]
    assert sublead.tolist() == [4.0, 1.0]
    assert selection.with_two(array).tolist() == [0, 3]


def test_leading_pair_of_a_sliced_array():
    # Slicing gives a ListArray whose starts do not begin at zero.
    array = ak.Array([[9.0, 8.0], [7.0, 6.0, 5.0], [4.0], [3.0, 2.0]])[[3, 1]]
    lead, sublead = selection.leading_pair(array)
    assert lead.tolist() == [3.0, 7.0]
    assert sublead.tolist() == [2.0, 6.0]


def test_tight_id_needs_both():
    passed = selection.tight_id(PhotonPair(np.array([True, True, False]), np.array([True, False, True])))
    assert passed.tolist() == [True, False, False]


def test_pt_thresholds():
    passed = selection.pt_thresholds(pair([60, 50, 60, 45], [35, 35, 30, 40]), lead=50, sublead=30)
    assert passed.tolist() == [True, False, False, False]


def test_isolation_is_relative_to_pt():
    ptcone20, pt = pair([1.0, 6.0, 1.0], [1.0, 1.0, 3.0]), pair([100, 100, 100], [50, 50, 50])
    passed = selection.isolated(ptcone20, pt, maximum=0.055)
    assert passed.tolist() == [True, False, False]


def test_crack_is_really_excluded():
    eta = pair([0.5, 1.40, -1.45, 2.0, 1.37], [-2.0, 0.1, 0.1, 1.51, -1.52])
    passed = selection.outside_crack(eta, low=1.37, high=1.52)
    assert passed.tolist() == [True, False, False, False, True]


def test_diphoton_mass_of_back_to_back_photons():
    # Two massless photons of 62.5 GeV back to back at eta = 0 make m = 125 GeV.
    pt, eta, phi = pair([62.5], [62.5]), pair([0.0], [0.0]), pair([0.0], [np.pi])
    assert selection.diphoton_mass(pt, eta, phi, pt)[0] == pytest.approx(125.0)


def test_diphoton_mass_matches_the_invariant_formula():
    pt, eta, phi = pair([80.0], [40.0]), pair([0.3], [-1.1]), pair([0.2], [2.9])
    e = pair(pt.lead * np.cosh(eta.lead), pt.sublead * np.cosh(eta.sublead))
    expected = np.sqrt(2 * 80 * 40 * (np.cosh(0.3 + 1.1) - np.cos(0.2 - 2.9)))
    assert selection.diphoton_mass(pt, eta, phi, e)[0] == pytest.approx(expected)


def test_pt_over_mass_and_window():
    assert selection.pt_over_mass(pair([50, 50], [44, 40]), np.array([125.0, 125.0]), minimum=0.35).tolist() == [True, False]
    assert selection.in_window(np.array([99.9, 100.0, 159.9, 160.0]), low=100, high=160).tolist() == [False, True, True, False]
    assert selection.nonzero_mass(np.array([0.0, 1.0])).tolist() == [False, True]


def test_select_cutflow_on_five_events():
    sample = events(
        [
            [massless(62.5, 0.0, 0.0), massless(62.5, 0.0, np.pi), massless(20, 1.0, 1.0)],  # passes: m = 125
            [massless(62.5, 0.0, 0.0)],  # one photon
            [massless(62.5, 0.0, 0.0), massless(62.5, 0.0, np.pi, tight=False)],  # not tight
            [massless(62.5, 1.45, 0.0), massless(62.5, 0.0, np.pi)],  # leading photon in the crack
            [massless(85.0, 0.0, 0.0), massless(85.0, 0.0, np.pi)],  # m = 170: outside the window
        ]
    )
    result = selection.select(sample)
    assert result.mass.tolist() == pytest.approx([125.0])
    assert list(result.cutflow) == list(CUT_NAMES)
    assert list(result.cutflow.values()) == [5, 4, 3, 3, 3, 2, 2, 2, 1]


def test_select_uses_the_given_thresholds():
    sample = events([[massless(62.5, 0.0, 0.0), massless(62.5, 0.0, np.pi)]])
    assert selection.select(sample, Cuts(lead_pt=70.0)).cutflow["pt"] == 0
    assert selection.select(sample, Cuts(mass_window=(126.0, 160.0))).mass.size == 0
