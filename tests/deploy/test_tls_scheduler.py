"""A TLS scheduler as coffea-casa's (``tls://``, every process presenting a certificate its CA signed): the config's
``cluster.scheduler.tls`` files connect, the project's code is shipped over it to workers that lack it, and each
wrong certificate ends in one ``error:`` line that names the file to check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.cli import main
from deploy.clusters import dask_client
from deploy.config import load_config
from processors.generate import generate_dataset
from tests.deploy._certificates import authority, issue
from tests.deploy._dask_processes import TLSFiles, bare_python, dask_cluster


class Certificates:
    def __init__(self, directory: Path):
        self.ca = authority(directory, "facility-ca")
        self.other_ca = authority(directory, "other-ca")
        self.node = TLSFiles(self.ca.cert_file, *issue(self.ca, directory, "node"))
        self.client_cert, self.client_key = issue(self.ca, directory, "client")
        self.stranger_cert, self.stranger_key = issue(self.other_ca, directory, "stranger")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module")
def tls_cluster(certificates: Certificates, tmp_path_factory: pytest.TempPathFactory):
    python = bare_python(tmp_path_factory.mktemp("bare-venv"))
    with dask_cluster(python, tmp_path_factory.mktemp("tls-dask"), workers=1, tls=certificates.node) as running:
        yield running


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    generated = generate_dataset(tmp_path_factory.mktemp("gen"), events=20_000, seed=3, periods=["data15_periodD"])
    return [str(path) for path in generated.files]


def config(path: Path, address: str, **tls: Path | None) -> Path:
    files = "".join(f"      {key}: {'null' if value is None else value}\n" for key, value in tls.items())
    path.write_text(f"cluster:\n  kind: scheduler\n  scheduler:\n    address: {address}\n    timeout: 20\n"
                    f"    tls:\n{files}")
    return path


def one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.slow
def test_the_configured_certificates_run_process_on_workers_without_the_project(tls_cluster, certificates, dataset,
                                                                               tmp_path, capsys):
    path = config(tmp_path / "casa.yaml", tls_cluster.address, ca_file=certificates.ca.cert_file,
                  cert=certificates.client_cert, key=certificates.client_key)
    main(["process", *dataset, "--config", str(path), "--no-progress", "--out", str(tmp_path / "tls")])
    main(["process", *dataset, "--workers", "0", "--no-progress", "--out", str(tmp_path / "here")])
    capsys.readouterr()
    assert (tmp_path / "tls" / "histograms.json").read_text() == (tmp_path / "here" / "histograms.json").read_text()
    assert json.loads((tmp_path / "tls" / "summary.json").read_text())["failed_chunks"] == []

    # A certificate and its key in one PEM file (coffea-casa's hostcert.pem): no key named.
    both = tmp_path / "both.pem"
    both.write_bytes(certificates.client_cert.read_bytes() + certificates.client_key.read_bytes())
    path = config(tmp_path / "one-file.yaml", tls_cluster.address, ca_file=certificates.ca.cert_file, cert=both)
    with dask_client(load_config(path).cluster, announce=False) as client:
        assert client.submit(pow, 2, 10).result(timeout=60) == 1024


@pytest.mark.parametrize("case", ["scheduler certificate from another CA", "client certificate from another CA"])
def test_a_certificate_the_other_end_does_not_trust_is_one_line_naming_the_file(tls_cluster, certificates, dataset,
                                                                                 tmp_path, capsys, case):
    if case.startswith("scheduler"):  # the client trusts another CA than the facility's
        files = {"ca_file": certificates.other_ca.cert_file, "cert": certificates.client_cert,
                 "key": certificates.client_key}
        expected = (f"error: TLS: the certificate of the Dask scheduler at {tls_cluster.address} is not trusted by "
                    f"cluster.scheduler.tls.ca_file ({certificates.other_ca.cert_file}): ")
    else:  # the scheduler does not trust the client's certificate
        files = {"ca_file": certificates.ca.cert_file, "cert": certificates.stranger_cert,
                 "key": certificates.stranger_key}
        expected = (f"error: TLS: the Dask scheduler at {tls_cluster.address} closed the connection during the "
                    "handshake: it probably does not accept this client's certificate, "
                    f"cluster.scheduler.tls.cert ({certificates.stranger_cert})")
    path = config(tmp_path / "site.yaml", tls_cluster.address, **files)
    line = one_error_line(["process", *dataset, "--config", str(path), "--no-progress", "--out", str(tmp_path / "o")],
                          capsys)
    assert line.startswith(expected), line


def test_no_client_certificate_says_which_keys_to_set(tls_cluster, certificates, dataset, tmp_path, capsys):
    path = config(tmp_path / "ca-only.yaml", tls_cluster.address, ca_file=certificates.ca.cert_file)
    line = one_error_line(["process", *dataset, "--config", str(path), "--no-progress", "--out", str(tmp_path / "o")],
                          capsys)
    assert line == (f"error: TLS: the Dask scheduler at {tls_cluster.address} needs a client certificate and key: set "
                    "cluster.scheduler.tls (ca_file, cert, key) or the Dask config's distributed.comm.tls.ca-file and "
                    "distributed.comm.tls.client.cert/key")


def test_the_packaged_defaults_leave_tls_to_the_dask_config():
    tls = load_config().cluster.scheduler.tls
    assert (tls.ca_file, tls.cert, tls.key, tls.require_encryption) == (None, None, None, True)
    from deploy.security import client_security

    assert client_security(tls) is None and client_security(None) is None


def test_tls_failures_that_distributed_keeps_only_as_text_are_explained():
    from distributed.comm.core import CommClosedError

    from deploy.config import TLSSettings
    from deploy.security import tls_problem

    tls = TLSSettings("/ca.pem", "/client.pem", "/client-key.pem", True)
    alert = CommClosedError("in <TLS (closed)  local=tls://127.0.0.1:5 remote=tls://127.0.0.1:6>: SSLError: "
                            "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:2580)")
    assert tls_problem("tls://h:1", alert, tls) == (
        "TLS: the Dask scheduler at tls://h:1 closed the connection during the handshake: it probably does not accept "
        "this client's certificate, cluster.scheduler.tls.cert (/client.pem) (SSLError: tlsv1 alert unknown ca)")
    verify = OSError("Timed out trying to connect: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                     "unable to get local issuer certificate (_ssl.c:1006)")
    assert tls_problem("tls://h:1", verify, None) == (
        "TLS: the certificate of the Dask scheduler at tls://h:1 is not trusted by the Dask config CA "
        "(distributed.comm.tls.ca-file): unable to get local issuer certificate")
    assert tls_problem("tcp://h:1", OSError("Timed out trying to connect to tcp://h:1 after 5 s"), tls) is None
