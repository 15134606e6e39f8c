"""Branch schema of the ATLAS Open Data ``2025e-13tev-beta`` ``GamGam`` skim, and a check of opened trees.

The schema lists the branches this project writes and reads (a documented subset of the ~120 branches of the
real release), each with its numpy dtype and whether it is jagged. Jagged branches of one object collection
share a counter branch (``photon_pt``, ``photon_eta``, ... are counted by ``photon_n``). The real files store
the collections as ``std::vector<T>`` and the generated ones as ``T[]`` arrays with a counter; uproot reads both
as the same jagged arrays, so the check accepts either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import uproot

from processors.errors import InputFileError, SchemaError

#: Name of the tree in every file of the release.
TREE_NAME = "analysis"

#: Photon branches the H->yy selection reads (the coffea processor loads exactly these).
ANALYSIS_BRANCHES = (
    "photon_pt",
    "photon_eta",
    "photon_phi",
    "photon_e",
    "photon_isTightID",
    "photon_ptcone20",
)


class Branch(NamedTuple):
    """One branch of the schema.

    Attributes:
        name: branch name in the tree.
        dtype: numpy dtype of the values (of the elements, for a jagged branch).
        counter: name of the counter branch of a jagged branch, ``None`` for a scalar branch.
        doc: what the branch holds (energies and momenta in GeV).
    """

    name: str
    dtype: np.dtype
    counter: str | None
    doc: str

    @property
    def jagged(self) -> bool:
        """Whether the branch holds a variable-length list per event."""
        return self.counter is not None


def _scalars(dtype: str, docs: dict[str, str]) -> list[Branch]:
    return [Branch(name, np.dtype(dtype), None, doc) for name, doc in docs.items()]


def _collection(prefix: str, fields: dict[str, tuple[str, str]], what: str) -> list[Branch]:
    counter = f"{prefix}_n"
    return [Branch(counter, np.dtype("int32"), None, f"number of {what}")] + [
        Branch(f"{prefix}_{field}", np.dtype(dtype), counter, f"{what}: {doc}")
        for field, (dtype, doc) in fields.items()
    ]


_KINEMATICS = {
    "pt": ("float32", "transverse momentum"),
    "eta": ("float32", "pseudorapidity"),
    "phi": ("float32", "azimuth"),
    "e": ("float32", "energy"),
}

#: Every branch of the schema, in file order.
BRANCHES: tuple[Branch, ...] = tuple(
    _scalars(
        "uint32",
        {"runNumber": "run number (data-taking period)", "channelNumber": "dataset id (the run number in data)"},
    )
    + _scalars("uint64", {"eventNumber": "event number, unique within a run"})
    + _scalars(
        "float32",
        {
            "mcWeight": "generator weight (1 in data)",
            "xsec": "cross-section in pb (1 in data)",
            "filteff": "generator filter efficiency (1 in data)",
            "kfac": "k-factor (1 in data)",
            "sum_of_weights": "sum of generator weights of the dataset (1 in data)",
            "sum_of_weights_squared": "sum of squared generator weights (1 in data)",
            "num_events": "events in the unskimmed dataset",
            "ScaleFactor_PILEUP": "pile-up reweighting factor (1 in data)",
            "ScaleFactor_BTAG": "b-tagging scale factor (1 in data)",
            "ScaleFactor_ELE": "electron scale factor (1 in data)",
            "ScaleFactor_MUON": "muon scale factor (1 in data)",
            "ScaleFactor_PHOTON": "photon scale factor (1 in data)",
            "ScaleFactor_TAU": "tau scale factor (1 in data)",
            "ScaleFactor_JVT": "jet-vertex-tagger scale factor (1 in data)",
            "ScaleFactor_LepTRIGGER": "single-lepton trigger scale factor (1 in data)",
            "ScaleFactor_MLTRIGGER": "multi-lepton trigger scale factor (1 in data)",
        },
    )
    + _scalars(
        "bool",
        {
            "trigE": "an electron trigger fired",
            "trigM": "a muon trigger fired",
            "trigP": "a diphoton trigger fired",
            "TriggerMatch_DILEPTON": "the leptons match a dilepton trigger",
        },
    )
    + _scalars(
        "float32",
        {
            "met": "missing transverse momentum",
            "met_phi": "azimuth of the missing transverse momentum",
            "met_mpx": "x component of the missing transverse momentum",
            "met_mpy": "y component of the missing transverse momentum",
        },
    )
    + _collection(
        "photon",
        {
            **_KINEMATICS,
            "isLooseID": ("bool", "passes loose identification"),
            "isTightID": ("bool", "passes tight identification"),
            "isLooseIso": ("bool", "passes loose isolation"),
            "isTightIso": ("bool", "passes tight isolation"),
            "ptcone20": ("float32", "track isolation: scalar sum of track pT in a cone of 0.2"),
            "topoetcone40": ("float32", "calorimeter isolation: topo-cluster ET in a cone of 0.4"),
        },
        "photons, ordered by decreasing pT",
    )
    + _collection(
        "lep",
        {
            "type": ("int32", "PDG id magnitude: 11 electron, 13 muon"),
            **_KINEMATICS,
            "charge": ("int32", "electric charge"),
            "ptvarcone30": ("float32", "track isolation in a pT-dependent cone of at most 0.3"),
            "topoetcone20": ("float32", "calorimeter isolation in a cone of 0.2"),
            "z0": ("float32", "longitudinal impact parameter in mm"),
            "d0": ("float32", "transverse impact parameter in mm"),
            "d0sig": ("float32", "transverse impact parameter significance"),
            "isTightID": ("bool", "passes tight identification"),
            "isMediumID": ("bool", "passes medium identification"),
            "isLooseID": ("bool", "passes loose identification"),
            "isTightIso": ("bool", "passes tight isolation"),
            "isLooseIso": ("bool", "passes loose isolation"),
            "isTrigMatched": ("bool", "matched to the trigger object"),
        },
        "leptons",
    )
    + _collection(
        "jet",
        {
            **_KINEMATICS,
            "btag_quantile": ("int32", "pseudo-continuous b-tagging bin (1 loosest .. 5 tightest)"),
            "jvt": ("bool", "passes the jet-vertex tagger"),
        },
        "small-R jets",
    )
    + _collection(
        "tau",
        {
            **_KINEMATICS,
            "charge": ("int32", "electric charge"),
            "nTracks": ("int32", "number of tracks"),
            "isTight": ("bool", "passes tight identification"),
            "RNNJetScore": ("float32", "RNN score against jets"),
            "RNNEleScore": ("float32", "RNN score against electrons"),
        },
        "hadronic taus",
    )
    + _collection(
        "largeRJet",
        {**_KINEMATICS, "m": ("float32", "mass"), "D2": ("float32", "D2 substructure variable")},
        "large-R jets",
    )
)

#: The schema keyed by branch name.
SCHEMA: dict[str, Branch] = {branch.name: branch for branch in BRANCHES}


def _describe(jagged: bool, dtype: np.dtype) -> str:
    return f"{'jagged ' if jagged else ''}{dtype}"


def _found_type(branch: Any) -> tuple[bool, np.dtype] | None:
    """(jagged, dtype) of an uproot branch, or None if it holds something else (objects, nested lists)."""
    try:
        interpretation = branch.interpretation
    except Exception:  # uproot raises many kinds for branches it cannot interpret
        return None
    if isinstance(interpretation, uproot.AsJagged):
        content = interpretation.content
        if isinstance(content, uproot.AsDtype):
            return True, content.to_dtype
        return None
    if isinstance(interpretation, uproot.AsDtype) and interpretation.to_dtype.shape == ():
        return False, interpretation.to_dtype
    return None


def validate_tree(tree: Any, *, branches: Iterable[str] | None = None, source: str | None = None) -> None:
    """Check that an opened tree has the schema's branches with the schema's types.

    Args:
        tree: an uproot ``TTree`` (``uproot.open(path)["analysis"]``).
        branches: the branch names to check (default: all of ``BRANCHES``); each must be in the schema.
        source: how to name the file in errors (default: the tree's file path).

    Raises:
        SchemaError: a branch is missing or has another type than the schema's; the message names the file
            and the branch.
    """
    source = source or getattr(getattr(tree, "file", None), "file_path", None) or "<tree>"
    names = list(branches) if branches is not None else list(SCHEMA)
    for name in names:
        if name not in SCHEMA:
            raise SchemaError(f"branch {name!r} is not in the GamGam schema (processors.schema.SCHEMA)")
        expected = SCHEMA[name]
        if name not in tree:
            raise SchemaError(f"{source}: tree {tree.name!r} has no branch {name!r}")
        found = _found_type(tree[name])
        if found is None:
            raise SchemaError(
                f"{source}: branch {name!r} has type {tree[name].typename!r}, "
                f"expected {_describe(expected.jagged, expected.dtype)}"
            )
        if found != (expected.jagged, expected.dtype):
            raise SchemaError(
                f"{source}: branch {name!r} is {_describe(*found)}, "
                f"expected {_describe(expected.jagged, expected.dtype)}"
            )


def validate_file(path: str, *, branches: Iterable[str] | None = None, tree_name: str = TREE_NAME) -> int:
    """Open a ROOT file, check its tree against the schema and return the number of entries.

    Args:
        path: local path or URL of the file.
        branches: the branch names to check (default: all of ``BRANCHES``).
        tree_name: name of the tree.

    Returns:
        The number of entries of the tree.

    Raises:
        InputFileError: the file is missing or not a readable ROOT file.
        SchemaError: the tree is missing, or a branch is missing or of the wrong type.
    """
    try:
        file = uproot.open(path)
    except FileNotFoundError as err:
        raise InputFileError(f"{path}: no such file") from err
    except Exception as err:  # uproot signals a non-ROOT or truncated file with several exception types
        raise InputFileError(f"{path}: not a readable ROOT file ({type(err).__name__}: {err})") from err
    with file:
        if tree_name not in file:
            raise SchemaError(f"{path}: no tree {tree_name!r} (found: {', '.join(file.keys(cycle=False)) or 'none'})")
        tree = file[tree_name]
        if not isinstance(tree, uproot.behaviors.TTree.TTree):
            raise SchemaError(f"{path}: {tree_name!r} is a {file.classname_of(tree_name)}, not a TTree")
        validate_tree(tree, branches=branches, source=path)
        return int(tree.num_entries)
