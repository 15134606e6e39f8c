"""`opendata-stats fetch-likelihoods` (and HEPData sources given to `patchset`, `scan-patchset`, `run`) against a
local HTTP server on 127.0.0.1 that serves archives under HEPData's paths: the 1Lbb archive as the tutorial asks
for it, records, digest mismatches, HTTP errors, pages that are not archives, hostile archives, a stalled server."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from stats.fetch import SOURCE_FILE, download_url
from tests.stats.test_hepdata import SIGNALS, TARBALL, small_bkg_only, small_patchset

#: The tutorial's resource: https://www.hepdata.net/record/resource/1408476?view=true
RESOURCE = "/record/resource/1408476"
#: SHA-256 of the shared 1Lbb archive (../shared/data/1Lbb-likelihoods.tar.gz).
SHA_1LBB = "a821710c314d5089de188ce970a31023d2a5cd3aedaf2c19547a05e976777d2d"


@pytest.fixture
def site(monkeypatch) -> Iterator[SimpleNamespace]:
    """An HTTP server on 127.0.0.1: ``routes`` maps a path (query ignored) to bytes or a callable giving bytes;
    ``seen`` lists every path and query asked for."""
    routes: dict[str, bytes | Callable[[], bytes]] = {}
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.path)
            body = routes.get(urllib.parse.urlsplit(self.path).path)
            if body is None:
                self.send_error(404)
                return
            payload = body() if callable(body) else body
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}", routes=routes, seen=seen)
    finally:
        server.shutdown()
        server.server_close()


def toy_archive(tmp_path: Path) -> bytes:
    bkg = small_bkg_only()
    files = {"toy/BkgOnly.json": json.dumps(bkg).encode(),
             "toy/patchset.json": json.dumps(small_patchset(bkg, SIGNALS)).encode(), "toy/README.md": b"toy\n"}
    return archive_bytes(files)


def archive_bytes(members: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    """A .tar.gz in memory: regular ``members``, and ``links`` name -> (tarfile.SYMTYPE or LNKTYPE, target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return buffer.getvalue()


def opendata_stats(argv: list[str], capsys) -> tuple[int, str, str]:
    from deploy.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    for fragment in fragments:
        assert fragment in err, err


def nothing_left(parent: Path, out: Path) -> bool:
    return not out.exists() and not list(parent.glob(".fetch-*"))


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.skipif(not TARBALL.exists(), reason="shared 1Lbb likelihoods absent")
def test_the_tutorial_url_downloads_checks_and_extracts_the_1lbb_likelihoods(site, tmp_path: Path, capsys) -> None:
    site.routes[RESOURCE] = lambda: TARBALL.read_bytes()  # read at test time, never copied into the project
    out = tmp_path / "1Lbb"
    url = f"{site.url}{RESOURCE}?view=true"
    code, stdout, err = opendata_stats(["fetch-likelihoods", url, "--sha256", SHA_1LBB, "--out", str(out)], capsys)
    assert code == 0, err
    assert f"sha256 {SHA_1LBB}" in stdout and "1,913,184 bytes" in stdout
    assert "125 patches over (m1, m2)" in stdout and "background-only digest 2563672e" in stdout
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        SOURCE_FILE, "1Lbb-likelihoods/BkgOnly.json", "1Lbb-likelihoods/README.md", "1Lbb-likelihoods/patchset.json"]
    assert json.loads((out / SOURCE_FILE).read_text())["sha256"] == SHA_1LBB
    assert site.seen == [f"{RESOURCE}?view=true"]

    code, stdout, err = opendata_stats(["fetch-likelihoods", url, "--out", str(out)], capsys)
    assert code == 0 and "already in" in stdout, err
    assert len(site.seen) == 1  # reused: not downloaded again


def test_a_resource_url_without_view_true_asks_for_the_file(site) -> None:
    assert download_url(f"{site.url}{RESOURCE}") == f"{site.url}{RESOURCE}?view=true"
    assert download_url(f"{site.url}{RESOURCE}?landing_page=true") == f"{site.url}{RESOURCE}?view=true"
    assert download_url("1408476") == "https://www.hepdata.net/record/resource/1408476?view=true"
    assert download_url("1408476", site=site.url + "/") == f"{site.url}{RESOURCE}?view=true"
    assert download_url("10.17182/hepdata.90607.v3/r3") == "https://doi.org/10.17182/hepdata.90607.v3/r3"
    assert download_url("https://doi.org/10.17182/hepdata.90607.v3/r3#sha256=x") == (
        "https://doi.org/10.17182/hepdata.90607.v3/r3")


def test_a_resource_id_and_a_record_on_a_given_site(site, tmp_path: Path, capsys) -> None:
    site.routes["/record/resource/77"] = toy_archive(tmp_path)
    code, stdout, err = opendata_stats(["fetch-likelihoods", "77", "--hepdata", site.url, "--out",
                                        str(tmp_path / "by-id")], capsys)
    assert code == 0, err
    assert "3 patches over (m1, m2)" in stdout and site.seen == ["/record/resource/77?view=true"]

    landing = f"{site.url}/record/resource/77?landing_page=true"
    site.routes["/record/ins1755298"] = json.dumps({"record": {"analyses": [
        {"type": "rivet", "analysis": "https://rivet.hepforge.org/analyses/X"},
        {"type": "HistFactory", "analysis": landing, "filename": "toy.tar.gz"}]}}).encode()
    code, stdout, err = opendata_stats(["fetch-likelihoods", "ins1755298", "--hepdata", site.url, "--out",
                                        str(tmp_path / "by-record")], capsys)
    assert code == 0, err
    assert site.seen[-2:] == ["/record/ins1755298?format=json&light=true", "/record/resource/77?view=true"]

    site.routes["/record/ins2"] = json.dumps({"record": {"analyses": [
        {"type": "HistFactory", "analysis": landing, "filename": "a.tar.gz"},
        {"type": "HistFactory", "analysis": landing.replace("77", "78"), "filename": "b.tar.gz"}]}}).encode()
    code, _, err = opendata_stats(["fetch-likelihoods", "ins2", "--hepdata", site.url, "--out",
                                   str(tmp_path / "two")], capsys)
    assert_one_error(code, err, "2 HistFactory resources: 77 (a.tar.gz), 78 (b.tar.gz)")


def test_a_digest_mismatch_is_one_error_and_leaves_nothing(site, tmp_path: Path, capsys) -> None:
    payload = toy_archive(tmp_path)
    site.routes[RESOURCE] = payload
    out = tmp_path / "out"
    wrong = hashlib.sha256(b"something else").hexdigest()
    code, _, err = opendata_stats(["fetch-likelihoods", f"{site.url}{RESOURCE}?view=true", "--sha256", wrong,
                                   "--out", str(out)], capsys)
    assert_one_error(code, err, hashlib.sha256(payload).hexdigest(), wrong)
    assert nothing_left(tmp_path, out)
    code, _, err = opendata_stats(["fetch-likelihoods", f"{site.url}{RESOURCE}#sha256={wrong}", "--out", str(out)],
                                  capsys)
    assert_one_error(code, err, "sha256")
    code, _, err = opendata_stats(["fetch-likelihoods", "77", "--sha256", "abc", "--out", str(out)], capsys)
    assert_one_error(code, err, "not a SHA-256")
    assert nothing_left(tmp_path, out)


def test_http_errors_pages_and_unknown_sources_are_one_error(site, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, _, err = opendata_stats(["fetch-likelihoods", f"{site.url}/record/resource/404?view=true", "--out",
                                   str(out)], capsys)
    assert_one_error(code, err, "HTTP status 404")
    site.routes["/record/resource/5"] = b"<!DOCTYPE html><html><body>HEPData</body></html>"
    code, _, err = opendata_stats(["fetch-likelihoods", "5", "--hepdata", site.url, "--out", str(out)], capsys)
    assert_one_error(code, err, "returned an HTML page, not a tar archive")
    code, _, err = opendata_stats(["fetch-likelihoods", "atlas-susy-1lbb", "--out", str(out)], capsys)
    assert_one_error(code, err, "not a HEPData source")
    code, _, err = opendata_stats(["fetch-likelihoods", "5", "--hepdata", "http://127.0.0.1:9", "--out", str(out)],
                                  capsys)
    assert_one_error(code, err, "cannot download http://127.0.0.1:9/record/resource/5?view=true")
    assert nothing_left(tmp_path, out)


@pytest.mark.parametrize("members,links,says", [
    ({"../escape.json": b"{}"}, None, "escapes"),
    ({"/tmp/abs-escape.json": b"{}"}, None, "escapes"),
    ({"x/BkgOnly.json": b"{}"}, {"x/link": (tarfile.SYMTYPE, "/etc/passwd")}, "links outside"),
    ({"x/BkgOnly.json": b"{}"}, {"x/link": (tarfile.SYMTYPE, "../../outside")}, "links outside"),
    ({"x/BkgOnly.json": b"{}"}, {"x/hard": (tarfile.LNKTYPE, "../../outside")}, "links outside"),
    ({"x/BkgOnly.json": b"{}"}, {"x/dev": (tarfile.CHRTYPE, "")}, "device"),
])
def test_hostile_archives_are_refused_before_anything_is_written(site, tmp_path: Path, capsys, members, links,
                                                                 says) -> None:
    site.routes[RESOURCE] = archive_bytes(members, links)
    out = tmp_path / "deep" / "out"
    code, _, err = opendata_stats(["fetch-likelihoods", f"{site.url}{RESOURCE}?view=true", "--out", str(out)],
                                  capsys)
    assert_one_error(code, err, says, f"{site.url}{RESOURCE}?view=true")
    assert nothing_left(out.parent, out) and not (tmp_path / "escape.json").exists()
    assert not Path("/tmp/abs-escape.json").exists()


def test_a_non_empty_directory_is_not_overwritten(site, tmp_path: Path, capsys) -> None:
    site.routes[RESOURCE] = toy_archive(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = opendata_stats(["fetch-likelihoods", f"{site.url}{RESOURCE}", "--out", str(out)], capsys)
    assert_one_error(code, err, "already holds files")
    assert (out / "notes.txt").read_text() == "keep me" and site.seen == []


def test_a_stalled_server_is_given_up_after_the_timeout(site, tmp_path: Path, capsys) -> None:
    release = threading.Event()
    site.routes[RESOURCE] = lambda: (release.wait(10), b"late")[1]
    start = time.monotonic()
    try:
        code, _, err = opendata_stats(["fetch-likelihoods", f"{site.url}{RESOURCE}", "--timeout", "0.5", "--out",
                                       str(tmp_path / "out")], capsys)
    finally:
        release.set()
    assert_one_error(code, err, "no complete answer within 0.5 s")
    assert time.monotonic() - start < 5


def test_patchset_scan_patchset_and_run_take_a_hepdata_url(site, tmp_path: Path, capsys, monkeypatch) -> None:
    payload = toy_archive(tmp_path)
    digest = hashlib.sha256(payload).hexdigest()
    site.routes[RESOURCE] = payload
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = f"{site.url}{RESOURCE}?view=true#sha256={digest}"
    from deploy.cli import cli

    group = cli.make_context("opendata-stats", ["scan-patchset"], resilient_parsing=True)
    parsed = cli.get_command(group, "scan-patchset").make_context("scan-patchset", [url, "--out", "x.json"],
                                                                  parent=group, resilient_parsing=True)
    assert str(parsed.params["likelihoods"]).startswith("http:")
    assert site.seen == []  # shell completion parses the line without downloading
    code, stdout, err = opendata_stats(["patchset", url], capsys)
    assert code == 0, err
    assert "patches (3):" in stdout and f"sha256 {digest}" in err
    code, stdout, err = opendata_stats(["patchset", url, "--patch", "400,100"], capsys)
    assert code == 0 and "sig_400_100" in stdout and len(site.seen) == 1, err  # fetched once, then cached

    code, _, err = opendata_stats(["scan-patchset", url.replace(digest, "0" * 64), "--out",
                                   str(tmp_path / "cls.json")], capsys)
    assert_one_error(code, err, f"with sha256 {digest}, not the {'0' * 64} given")  # cached with another digest

    import deploy.cli_pipeline
    import deploy.pipeline

    seen = []

    def fake_pipeline(out, *, likelihoods, **kwargs):
        seen.append(likelihoods)
        raise SystemExit(0)

    monkeypatch.setattr(deploy.pipeline, "run_pipeline", fake_pipeline)  # run imports it when it runs
    monkeypatch.setattr(deploy.cli_pipeline, "dask_or_local", lambda *a, **k: __import__("contextlib").nullcontext())
    code, _, err = opendata_stats(["run", "--out", str(tmp_path / "run"), "--likelihoods", url], capsys)
    assert code == 0, err
    assert seen and (seen[0] / "toy" / "BkgOnly.json").exists() and str(seen[0]).startswith(str(tmp_path / "cache"))
    code, _, err = opendata_stats(["run", "--out", str(tmp_path / "run"), "--likelihoods", str(tmp_path / "no")],
                                  capsys)
    assert code == 2 and "neither a file or directory nor a HEPData" in err
