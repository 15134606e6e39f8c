"""The GamGam branch schema and the check of opened trees."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from processors.errors import InputFileError, SchemaError
from processors.schema import ANALYSIS_BRANCHES, BRANCHES, SCHEMA, TREE_NAME, validate_file, validate_tree


def _write(path, branches):
    # As the generator writes: collection records become counted `T[]` branches photon_pt, ... (photon_n).
    with uproot.recreate(path) as file:
        tree = file.mktree(
            TREE_NAME,
            {name: v.type.content if isinstance(v, ak.Array) else v.dtype for name, v in branches.items()},
            counter_name=lambda counted: f"{counted}_n",
            field_name=lambda outer, inner: f"{outer}_{inner}",
        )
        tree.extend(branches)
    return str(path)


def _photons(pt_dtype=np.float32):
    pt = ak.values_astype(ak.Array([[60.0, 40.0], [55.0, 35.0, 12.0]]), pt_dtype)
    return ak.zip({"pt": pt, "isTightID": ak.Array([[True, False], [True, True, False]])})


def test_schema_is_as_wide_as_documented():
    names = [branch.name for branch in BRANCHES]
    assert 75 <= len(names) <= 90
    assert len(set(names)) == len(names)
    # Every jagged branch is counted by an int32 scalar branch of the schema.
    for branch in BRANCHES:
        if branch.jagged:
            counter = SCHEMA[branch.counter]
            assert not counter.jagged and counter.dtype == np.int32
            assert branch.name.startswith(branch.counter[:-1])
        assert branch.doc


def test_real_release_types():
    assert SCHEMA["photon_n"].dtype == np.int32 and not SCHEMA["photon_n"].jagged
    assert SCHEMA["runNumber"].dtype == np.uint32
    assert SCHEMA["eventNumber"].dtype == np.uint64
    assert SCHEMA["trigP"].dtype == np.bool_
    assert SCHEMA["photon_isTightID"].jagged and SCHEMA["photon_isTightID"].dtype == np.bool_
    assert SCHEMA["jet_btag_quantile"].dtype == np.int32 and SCHEMA["jet_jvt"].dtype == np.bool_
    assert set(ANALYSIS_BRANCHES) <= set(SCHEMA)
    assert all(SCHEMA[name].counter == "photon_n" for name in ANALYSIS_BRANCHES)


def test_validate_accepts_counted_arrays(tmp_path):
    path = _write(
        tmp_path / "ok.root",
        {"photon": _photons(), "eventNumber": np.array([1, 2], dtype=np.uint64)},
    )
    with uproot.open(path) as file:
        validate_tree(file[TREE_NAME], branches=["photon_pt", "photon_isTightID", "eventNumber"])
    assert validate_file(path, branches=["photon_pt"]) == 2


class _Branch:
    def __init__(self, interpretation, typename):
        self.interpretation, self.typename = interpretation, typename


class _Tree(dict):
    name = TREE_NAME


def test_validate_accepts_the_real_files_vectors():
    # The real release stores std::vector<T> (uproot: AsJagged with a 10-byte header) and plain scalars.
    real = _Tree(
        photon_pt=_Branch(uproot.AsJagged(uproot.AsDtype(">f4"), header_bytes=10), "std::vector<float>"),
        photon_isTightID=_Branch(uproot.AsJagged(uproot.AsDtype("bool"), header_bytes=10), "std::vector<bool>"),
        photon_n=_Branch(uproot.AsDtype(">i4"), "int32_t"),
        eventNumber=_Branch(uproot.AsDtype(">u8"), "uint64_t"),
        lep_charge=_Branch(uproot.AsObjects(uproot.containers.AsVector(True, np.dtype(">i4"))), "weird"),
    )
    validate_tree(real, branches=["photon_pt", "photon_isTightID", "photon_n", "eventNumber"], source="real.root")
    with pytest.raises(SchemaError, match="real.root: branch 'lep_charge' has type 'weird', expected jagged int32"):
        validate_tree(real, branches=["lep_charge"], source="real.root")


def test_wrong_type_names_file_and_branch(tmp_path):
    path = _write(tmp_path / "wide.root", {"photon": _photons(np.float64)})
    with pytest.raises(SchemaError, match=r"wide\.root: branch 'photon_pt' is jagged float64, expected jagged float32"):
        validate_file(path, branches=["photon_pt"])


def test_scalar_where_jagged_expected(tmp_path):
    path = _write(tmp_path / "flat.root", {"photon_pt": np.array([1.0, 2.0], dtype=np.float32)})
    with pytest.raises(SchemaError, match="branch 'photon_pt' is float32, expected jagged float32"):
        validate_file(path, branches=["photon_pt"])


def test_missing_branch(tmp_path):
    path = _write(tmp_path / "few.root", {"photon": _photons()})
    with pytest.raises(SchemaError, match=r"few\.root: tree 'analysis' has no branch 'photon_eta'"):
        validate_file(path, branches=ANALYSIS_BRANCHES)


def test_missing_tree(tmp_path):
    path = tmp_path / "other.root"
    with uproot.recreate(path) as file:
        file.mktree("mini", {"x": np.float64})
    with pytest.raises(SchemaError, match=r"other\.root: no tree 'analysis' \(found: mini\)"):
        validate_file(str(path))


def test_rntuple_is_not_a_tree(tmp_path):
    path = tmp_path / "ntuple.root"
    with uproot.recreate(path) as file:
        file[TREE_NAME] = {"photon_pt": np.zeros(3, dtype=np.float32)}  # uproot 5.7 writes an RNTuple here
    with pytest.raises(SchemaError, match=r"ntuple\.root: 'analysis' is a .*RNTuple.*, not a TTree"):
        validate_file(str(path))


def test_unknown_branch_requested(tmp_path):
    path = _write(tmp_path / "ok.root", {"photon": _photons()})
    with pytest.raises(SchemaError, match="'photon_foo' is not in the GamGam schema"):
        validate_file(path, branches=["photon_foo"])


def test_not_a_root_file(tmp_path):
    path = tmp_path / "junk.root"
    path.write_text("not ROOT")
    with pytest.raises(InputFileError, match=r"junk\.root: not a readable ROOT file"):
        validate_file(str(path))
    with pytest.raises(InputFileError, match=r"absent\.root: no such file"):
        validate_file(str(tmp_path / "absent.root"))
