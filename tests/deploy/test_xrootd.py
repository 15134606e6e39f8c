"""The local XRootD server: root:// and https:// reads match local reads, stop/restart, metadata, CLI."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import atlasopenmagic
import awkward as ak
import pytest
import uproot
from fsspec_xrootd import XRootDFileSystem

from deploy.errors import DeployError
from deploy.xrootd import XRootDServer, metadata_file

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "xrootd"], capture_output=True).returncode != 0, reason="xrootd is not on PATH"
)

TREE = "analysis"


def write_sample(path: Path, *, seed: int = 1) -> ak.Array:
    """Write a small tree with two jagged branches and return its content."""
    photons = ak.Array(
        {"photon_pt": [[60.0 + seed, 35.5], [], [51.0, 40.0, 31.0]], "photon_eta": [[0.1, -1.2], [], [2.0, 0.5, -0.3]]}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with uproot.recreate(path) as file:
        file[TREE] = {"photon_pt": photons.photon_pt, "photon_eta": photons.photon_eta}
    path.chmod(0o644)
    return uproot.open(path)[TREE].arrays(["photon_pt", "photon_eta"])


def read(url: str, **options: object) -> ak.Array:
    with uproot.open(url, timeout=5, **options) as file:
        return file[TREE].arrays(["photon_pt", "photon_eta"])


def test_root_and_https_reads_match_local_reads(xrootd_server: XRootDServer) -> None:
    local = write_sample(xrootd_server.handle.served_dir / "reads" / "sample.root")
    [root_url] = [url for url in xrootd_server.urls("root") if url.endswith("reads/sample.root")]
    [https_url] = [url for url in xrootd_server.urls("https") if url.endswith("reads/sample.root")]
    assert root_url.startswith("root://127.0.0.1:")
    assert https_url.startswith("https://127.0.0.1:")
    assert ak.to_list(read(root_url)) == ak.to_list(local)
    trusted = ssl.create_default_context(cafile=str(xrootd_server.handle.ca_file))
    assert ak.to_list(read(https_url, ssl=trusted)) == ak.to_list(local)


def test_https_rejects_clients_without_the_certificate(xrootd_server: XRootDServer) -> None:
    write_sample(xrootd_server.handle.served_dir / "untrusted" / "sample.root")
    [https_url] = [url for url in xrootd_server.urls("https") if "untrusted" in url]
    with pytest.raises(Exception, match="(?i)certificate"):
        read(https_url, ssl=ssl.create_default_context())


def test_certificate_named_after_aiohttp_was_imported_is_trusted(xrootd_server: XRootDServer, monkeypatch) -> None:
    # aiohttp (imported at the top of this module) read the CA bundle once, before SSL_CERT_FILE was set.
    from processors.chunks import open_tree

    path = xrootd_server.handle.served_dir / "late-ca" / "sample.root"
    path.parent.mkdir(parents=True)
    local = ak.values_astype(ak.Array({"photon_pt": [[60.0, 35.5], [], [51.0]], "photon_eta": [[0.1, -1.2], [], [2.0]]}), "float32")
    with uproot.recreate(path) as file:
        file.mktree(TREE, {"photon_pt": "var * float32", "photon_eta": "var * float32"}).extend(
            {"photon_pt": local.photon_pt, "photon_eta": local.photon_eta}
        )
    path.chmod(0o644)
    [https_url] = [url for url in xrootd_server.urls("https") if "late-ca" in url]
    monkeypatch.setenv("SSL_CERT_FILE", str(xrootd_server.handle.ca_file))
    tree = open_tree(https_url, TREE, ("photon_pt", "photon_eta"), timeout=5)
    try:
        assert ak.to_list(tree.arrays(["photon_pt", "photon_eta"])) == ak.to_list(local)
    finally:
        tree.file.close()


def test_metadata_files_list_urls_per_protocol(xrootd_server: XRootDServer, tmp_path: Path) -> None:
    write_sample(xrootd_server.handle.served_dir / "metadata" / "sample.root")
    written = xrootd_server.write_metadata(tmp_path)
    assert written == {"root": tmp_path / "metadata.json", "https": tmp_path / "metadata-https.json"}
    for protocol in ("root", "https"):
        atlasopenmagic.read_metadata(str(metadata_file(tmp_path, protocol)))
        urls = atlasopenmagic.get_urls("data", skim="GamGam", protocol="root", cache=False)
        assert urls == xrootd_server.urls(protocol)
        assert any(url.endswith("metadata/sample.root") for url in urls)


def test_stop_fails_reads_fast_and_restart_on_same_port_serves_again(tmp_path: Path) -> None:
    directory = tmp_path / "served"
    local = write_sample(directory / "sample.root", seed=7)
    with XRootDServer(directory, http_port=None) as server:
        url = server.urls("root")[0]
        port = server.handle.port
        assert ak.to_list(read(url)) == ak.to_list(local)
        server.stop()
        assert not server.running
        started = time.monotonic()
        with pytest.raises(OSError):
            read(url)
        assert time.monotonic() - started < 10
        time.sleep(1)
        handle = server.restart()
        assert handle.port == port
        # fsspec-xrootd caches open file handles per filesystem instance; those died with the server.
        XRootDFileSystem.clear_instance_cache()
        assert ak.to_list(read(url)) == ak.to_list(local)


def test_server_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="not a directory"):
        XRootDServer(tmp_path / "missing")


def test_unknown_metadata_protocol_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="protocol 'ftp'"):
        metadata_file(tmp_path, "ftp")


def test_serve_command_prints_urls_writes_metadata_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    local = write_sample(tmp_path / "data" / "sample.root")
    # The command alone: importing every command module (coffea, pyhf) would triple the start-up time.
    start = "from deploy.cli_services import serve; serve(prog_name='opendata-stats serve')"
    command = [sys.executable, "-c", start, str(tmp_path / "data")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if "Ctrl-C" in line:
                break
        output = "\n".join(lines)
        assert "serving; Ctrl-C to stop" in output, output
        root_url = next(line.split(" ", 1)[1] for line in lines if line.startswith("root: "))
        assert (tmp_path / "data" / "metadata.json").exists()
        assert (tmp_path / "data" / "metadata-https.json").exists()
        assert ak.to_list(read(f"{root_url}/sample.root")) == ak.to_list(local)
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        assert "stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _outward_address() -> str | None:
    import socket

    # Connecting a UDP socket sends nothing; it only picks the interface a packet would leave by.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = sock.getsockname()[0]
    return None if address.startswith("127.") else address


def test_plain_http_server_answers_loopback_only(tmp_path: Path) -> None:
    local = write_sample(tmp_path / "served" / "sample.root", seed=3)
    with XRootDServer(tmp_path / "served", tls=False) as server:
        handle = server.handle
        assert handle.http_url.startswith("http://127.0.0.1:") and handle.ca_file is None
        assert ak.to_list(read(server.urls("http")[0])) == ak.to_list(local)
        outward = _outward_address()
        if outward is None:
            pytest.skip("no non-loopback address to test refusal from")
        for url in (f"root://{outward}:{handle.port}//sample.root", f"http://{outward}:{handle.http_port}/sample.root"):
            # The daemon resets the connection: OSError over root://, a disconnect (or reset) over http://.
            with pytest.raises((OSError, aiohttp.ClientError)):
                read(url)
