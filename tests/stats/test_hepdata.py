"""Loading published likelihoods: archives, directories, file pairs, hostile archives, digests, lookup."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyhf
import pytest

from stats.errors import DigestMismatchError, UnknownPatchError, WorkspaceError
from stats.hepdata import extract_archive, load_likelihoods
from stats.likelihoods import describe, find_patch, select_patches

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TARBALL = SHARED / "1Lbb-likelihoods.tar.gz"


def small_bkg_only() -> dict:
    return {
        "channels": [{"name": "SR", "samples": [
            {"name": "bkg", "data": [50.0, 60.0], "modifiers": [
                {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                {"name": "stat", "type": "staterror", "data": [5.0, 6.0]}]}]}],
        "observations": [{"name": "SR", "data": [52.0, 57.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def small_patchset(bkg: dict, signals: dict[tuple[int, int], list[float]]) -> dict:
    patches = []
    for (m1, m2), rates in signals.items():
        sample = {"name": "signal", "data": rates, "modifiers": [
            {"name": "mu", "type": "normfactor", "data": None},
            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.05, "lo": 0.95}}]}
        patches.append({"metadata": {"name": f"sig_{m1}_{m2}", "values": [m1, m2]},
                        "patch": [{"op": "add", "path": "/channels/0/samples/1", "value": sample}]})
    return {"metadata": {"description": "toy signals", "digests": {"sha256": pyhf.utils.digest(bkg)},
                         "labels": ["m1", "m2"], "references": {"hepdata": "ins1234567"}},
            "patches": patches, "version": "1.0.0"}


SIGNALS = {(300, 100): [8.0, 2.0], (400, 100): [4.0, 6.0], (500, 100): [1.0, 1.5]}


@pytest.fixture
def toy_dir(tmp_path: Path) -> Path:
    bkg = small_bkg_only()
    folder = tmp_path / "toy-likelihoods"
    folder.mkdir()
    (folder / "BkgOnly.json").write_text(json.dumps(bkg))
    (folder / "patchset.json").write_text(json.dumps(small_patchset(bkg, SIGNALS)))
    return folder


def tarball(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def test_directory_pair_and_tarball_agree(toy_dir: Path, tmp_path: Path):
    by_dir = load_likelihoods(toy_dir)
    by_pair = load_likelihoods(toy_dir / "BkgOnly.json", toy_dir / "patchset.json")
    archive = tarball(tmp_path / "toy.tar.gz", {f"toy/{f.name}": f.read_bytes() for f in toy_dir.iterdir()})
    by_tar = load_likelihoods(archive)
    assert by_dir.digest == by_pair.digest == by_tar.digest == pyhf.utils.digest(small_bkg_only())
    assert [p.name for p in by_tar.patchset.patches] == ["sig_300_100", "sig_400_100", "sig_500_100"]


def test_lookup_by_name_and_values(toy_dir: Path):
    patchset = load_likelihoods(toy_dir).patchset
    assert tuple(find_patch(patchset, "sig_400_100").values) == (400, 100)
    assert find_patch(patchset, "500,100").name == "sig_500_100"
    assert find_patch(patchset, (300, 100)).name == "sig_300_100"
    assert [p.name for p in select_patches(patchset, ["500,100", "sig_500_100"])] == ["sig_500_100"]
    info = describe(patchset)
    assert info["labels"] == ["m1", "m2"] and len(info["patches"]) == 3 and "sha256" in info["digests"]


def test_unknown_patch_names_close_matches(toy_dir: Path):
    patchset = load_likelihoods(toy_dir).patchset
    with pytest.raises(UnknownPatchError, match="sig_400_100"):
        find_patch(patchset, "sig_400_10")
    with pytest.raises(UnknownPatchError, match=r"closest: sig_400_100 \(400,100\)"):
        find_patch(patchset, "410,90")
    with pytest.raises(UnknownPatchError, match="numbers"):
        find_patch(patchset, "4x0,90")


def test_not_a_tarball(tmp_path: Path):
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"not an archive at all")
    with pytest.raises(WorkspaceError, match="not a readable tar archive"):
        load_likelihoods(bogus)


def test_missing_bkg_only(toy_dir: Path, tmp_path: Path):
    archive = tarball(tmp_path / "t.tar.gz", {"x/patchset.json": (toy_dir / "patchset.json").read_bytes()})
    with pytest.raises(WorkspaceError, match="no BkgOnly.json"):
        load_likelihoods(archive)
    with pytest.raises(WorkspaceError, match="missing file"):
        load_likelihoods(tmp_path / "nothing-here")


def test_invalid_json_and_schema(toy_dir: Path):
    (toy_dir / "patchset.json").write_text("{not json")
    with pytest.raises(WorkspaceError, match="invalid JSON"):
        load_likelihoods(toy_dir)
    (toy_dir / "patchset.json").write_text(json.dumps({"patches": []}))
    with pytest.raises(WorkspaceError, match="patchset fails the schema"):
        load_likelihoods(toy_dir)
    (toy_dir / "BkgOnly.json").write_text(json.dumps({"channels": "nope"}))
    with pytest.raises(WorkspaceError, match="background-only workspace fails the schema"):
        load_likelihoods(toy_dir)


def test_digest_mismatch(toy_dir: Path):
    bkg = small_bkg_only()
    bkg["observations"][0]["data"] = [53.0, 57.0]
    (toy_dir / "BkgOnly.json").write_text(json.dumps(bkg))
    with pytest.raises(DigestMismatchError, match="does not belong"):
        load_likelihoods(toy_dir)


@pytest.mark.parametrize(
    "members,links",
    [
        ({"../escape.json": b"{}"}, None),
        ({"/abs/escape.json": b"{}"}, None),
        ({"ok/BkgOnly.json": b"{}"}, {"ok/link": "/etc/passwd"}),
        ({"ok/BkgOnly.json": b"{}"}, {"ok/link": "../../outside"}),
    ],
)
def test_hostile_archives_rejected(tmp_path: Path, members, links):
    archive = tarball(tmp_path / "evil.tar.gz", members, links)
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(WorkspaceError, match="escapes|links outside"):
        extract_archive(archive, target)
    assert not (tmp_path / "escape.json").exists() and not list(target.rglob("*"))


def test_oversized_member_rejected(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("stats.hepdata.MAX_MEMBER_BYTES", 10)
    archive = tarball(tmp_path / "big.tar.gz", {"x/BkgOnly.json": b"{" + b" " * 20 + b"}"})
    with pytest.raises(WorkspaceError, match="too large"):
        extract_archive(archive, tmp_path)


@pytest.mark.skipif(not TARBALL.exists(), reason="shared 1Lbb likelihoods absent")
def test_1lbb_tarball_loads_and_verifies():
    loaded = load_likelihoods(TARBALL)
    assert len(loaded.patchset.patches) == 125 and loaded.patchset.labels == ["m1", "m2"]
    assert loaded.digest.startswith("2563672e") and loaded.digest.endswith("f820")
    assert find_patch(loaded.patchset, "900,250").name == "C1N2_Wh_hbb_900_250"


def test_cli_patchset_lists_and_reports_errors(toy_dir: Path, capsys):
    from deploy.cli import main

    main(["patchset", str(toy_dir), "--patch", "400,100"])
    assert "sig_400_100" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["patchset", str(toy_dir), "--patch", "sig_40_100"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: no patch named 'sig_40_100'")


def test_a_name_fragment_finds_the_one_patch_that_holds_it(toy_dir: Path):
    patchset = load_likelihoods(toy_dir).patchset
    assert find_patch(patchset, "400_100").name == "sig_400_100"
    assert [p.name for p in select_patches(patchset, ["300_100", "500,100"])] == ["sig_300_100", "sig_500_100"]
    with pytest.raises(UnknownPatchError, match="'100' matches 3 patches: sig_300_100, sig_400_100, sig_500_100"):
        find_patch(patchset, "100")
    with pytest.raises(UnknownPatchError, match="no patch named '400_10'"):
        find_patch(patchset, "400_10")  # whole parts of the name only


@pytest.mark.parametrize("key", ["4_00,100", "400,1_00", "0x190,100", "400,100j", "nan,100"])
def test_patch_values_are_parsed_strictly(toy_dir: Path, key: str):
    with pytest.raises(UnknownPatchError, match="numbers"):
        find_patch(load_likelihoods(toy_dir).patchset, key)


def test_patch_values_need_one_per_label(toy_dir: Path):
    with pytest.raises(UnknownPatchError, match=r"expected 2 values \(m1,m2\), got '400,100,5'"):
        find_patch(load_likelihoods(toy_dir).patchset, "400,100,5")


@pytest.mark.slow
@pytest.mark.skipif(not TARBALL.exists(), reason="shared 1Lbb likelihoods absent")
def test_the_notebooks_650_0_is_a_name_fragment_not_6500(capsys):
    from deploy.cli import main

    patchset = load_likelihoods(TARBALL).patchset
    assert find_patch(patchset, "650_0").name == "C1N2_Wh_hbb_650_0"
    assert find_patch(patchset, "650,0").name == "C1N2_Wh_hbb_650_0"
    with pytest.raises(UnknownPatchError, match="'650' matches 7 patches: C1N2_Wh_hbb_650_0, "):
        find_patch(patchset, "650")
    main(["patchset", str(TARBALL), "--patch", "650_0", "--json"])
    assert json.loads(capsys.readouterr().out)["name"] == "C1N2_Wh_hbb_650_0"
