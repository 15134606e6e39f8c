"""The cluster factory against real Dask processes: an existing scheduler, a local cluster, a Dask Gateway."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.clusters import dask_client, htcondor_cluster, resolve_config
from deploy.config import load_config, settings_from_dict
from deploy.errors import DeployError
from deploy.xrootd import free_port


def square(x: int) -> int:
    return x * x


@pytest.mark.slow
def test_factory_connects_to_a_running_scheduler_with_two_workers(dask_scheduler_address: str) -> None:
    with dask_client(scheduler=dask_scheduler_address, announce=False) as client:
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 2
        assert all(info["nthreads"] == 1 for info in workers.values())
        assert all(address.startswith("tcp://127.0.0.1:") for address in workers)
        assert client.gather(client.map(square, range(10))) == [x * x for x in range(10)]


def test_config_file_selects_the_scheduler(dask_scheduler_address: str, tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(f"cluster:\n  kind: scheduler\n  scheduler: {{address: '{dask_scheduler_address}', timeout: 10}}\n")
    with dask_client(load_config(path).cluster, announce=False) as client:
        assert client.scheduler.address == dask_scheduler_address
        assert client.submit(square, 7).result() == 49


def test_local_cluster_binds_to_loopback_and_reports_the_dashboard(capsys: pytest.CaptureFixture[str]) -> None:
    with dask_client(workers=1, threads_per_worker=1, memory_limit="1GiB") as client:
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        assert len(client.scheduler_info()["workers"]) == 1
        assert client.submit(square, 3).result() == 9
    assert f"Dask dashboard: {client.dashboard_link}" in capsys.readouterr().err


def _diagnostics(dask_worker) -> tuple[bool, float, str | None, str | None]:
    return ("profile" in dask_worker.periodic_callbacks, dask_worker._tick_interval,
            os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("MALLOC_MMAP_THRESHOLD_"))


@pytest.mark.slow
def test_local_cluster_runs_without_profiler_and_slow_ticks_unless_configured(monkeypatch) -> None:
    for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)  # the shell's value would win over the config's
    with dask_client(workers=1, announce=False) as client:
        assert list(client.run(_diagnostics).values()) == [(False, 0.2, str(256 * 2**20), str(32 * 2**20))]
        assert client.cluster.scheduler._tick_interval == 0.2
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ  # the nanny's copy in this process is undone
    config = settings_from_dict({"cluster": {"local": {
        "profile": True, "tick_interval": "50ms", "environ": {"MALLOC_MMAP_THRESHOLD_": None, "OMP_NUM_THREADS": 2},
    }}}).cluster
    with dask_client(config, workers=1, announce=False) as client:
        # Dask's own 64 KiB trim threshold is what the defaults replace; a null unsets a variable.
        assert list(client.run(_diagnostics).values()) == [(True, 0.05, str(256 * 2**20), None)]
        assert list(client.run(lambda: __import__("os").environ["OMP_NUM_THREADS"]).values()) == ["2"]


def _gc_state() -> tuple[int, int, bool]:
    return gc.get_threshold()[0], gc.get_freeze_count(), "uproot" in sys.modules


@pytest.mark.slow
def test_local_workers_freeze_the_processing_code_and_collect_young_garbage_less_often() -> None:
    with dask_client(workers=2, announce=False) as client:
        states = list(client.run(_gc_state).values())
        # uproot, awkward, coffea and Dask alone are well over 100k objects; all are frozen, none collected again.
        assert len(states) == 2
        assert all(state[0] == 20000 and state[1] > 100_000 and state[2] for state in states)
        client.cluster.scale(3)  # a worker that joins later is tuned too
        client.wait_for_workers(3, timeout=60)
        assert all(state[0] == 20000 and state[1] > 100_000 for state in client.run(_gc_state).values())
    config = settings_from_dict({"cluster": {"local": {"gc_threshold": None}}}).cluster
    with dask_client(config, workers=1, announce=False) as client:
        assert [state[:2] for state in client.run(_gc_state).values()] == [(gc.get_threshold()[0], 0)]


def test_bad_tick_interval_is_rejected() -> None:
    with pytest.raises(DeployError, match="tick_interval"):
        settings_from_dict({"cluster": {"local": {"tick_interval": "often"}}})


def test_unreachable_scheduler_is_a_one_line_error() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    config = settings_from_dict({"cluster": {"scheduler": {"timeout": 2}}}).cluster
    started = time.monotonic()
    with pytest.raises(DeployError) as caught, dask_client(config, scheduler=address):
        pass
    assert str(caught.value).startswith(f"cannot connect to Dask scheduler at {address} within 2s")
    assert time.monotonic() - started < 20


def test_scheduler_kind_without_address_is_an_error() -> None:
    with pytest.raises(DeployError, match="cluster.scheduler.address is not set"), dask_client(kind="scheduler"):
        pass


def test_gateway_kind_without_address_is_an_error() -> None:
    with pytest.raises(DeployError, match="cluster.gateway.address is not set"), dask_client(kind="gateway"):
        pass


def test_unreachable_gateway_is_a_one_line_error() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DeployError, match=f"cannot reach Dask Gateway at {address}"):
        with dask_client(
            settings_from_dict({"cluster": {"kind": "gateway", "gateway": {"address": address}}}).cluster
        ):
            pass


def test_unknown_kind_flag_is_an_error() -> None:
    with pytest.raises(DeployError, match="unknown cluster kind 'k8s'"), dask_client(kind="k8s"):
        pass


def test_flags_override_the_file() -> None:
    config = settings_from_dict(
        {"cluster": {"kind": "htcondor", "local": {"workers": 4}, "htcondor": {"minimum": 0, "maximum": 9}}}
    ).cluster
    assert resolve_config(config).htcondor.maximum == 9
    fixed = resolve_config(config, workers=3, threads_per_worker=2)
    assert (fixed.kind, fixed.local.workers, fixed.local.threads_per_worker) == ("htcondor", 3, 2)
    assert (fixed.htcondor.minimum, fixed.htcondor.maximum) == (3, 3)
    remote = resolve_config(config, scheduler="tls://localhost:8786")
    assert (remote.kind, remote.scheduler.address) == ("scheduler", "tls://localhost:8786")
    with pytest.raises(DeployError, match="workers"):
        resolve_config(config, workers=0)


def test_htcondor_job_script_reflects_the_config(tmp_path: Path) -> None:
    settings = settings_from_dict(
        {
            "cluster": {
                "htcondor": {
                    "cores": 2,
                    "memory": "3 GiB",
                    "disk": "5 GiB",
                    "job_extra_directives": {"+AccountingGroup": '"group_u_atlas"'},
                    "log_directory": str(tmp_path / "logs"),
                    "image": "docker://coffeateam/coffea-dask:latest",
                    "env": {"XRD_CONNECTIONRETRY": "1"},
                }
            }
        }
    ).cluster.htcondor
    options = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    with htcondor_cluster(settings, scheduler_options=options) as cluster:
        script = cluster.job_script()
    assert "MY.DaskWorkerCores = 2" in script
    assert f"MY.DaskWorkerMemory = {3 * 2**30}" in script
    assert f"MY.DaskWorkerDisk = {5 * 2**30}" in script
    assert '+AccountingGroup = "group_u_atlas"' in script
    assert "container_image = docker://coffeateam/coffea-dask:latest" in script
    assert f"LogDirectory = {tmp_path / 'logs'}" in script
    assert "export XRD_CONNECTIONRETRY=1" in script
    assert "--nthreads 2" in script


def test_htcondor_example_tunes_the_workers_like_local_ones() -> None:
    import deploy

    settings = load_config(Path(deploy.__file__).parent / "facilities" / "htcondor.yaml").cluster.htcondor
    with htcondor_cluster(settings, scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}) as cluster:
        script = cluster.job_script()
    for line in ("export MALLOC_TRIM_THRESHOLD_=268435456", "export MALLOC_MMAP_THRESHOLD_=33554432",
                 "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False"):
        assert line in script


GATEWAY_CONFIG = """
c.DaskGateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{proxy}"
c.Proxy.tcp_address = "127.0.0.1:{tcp}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.LocalBackend.clusters_directory = "{workdir}/clusters"
c.ClusterConfig.scheduler_cmd = ["{python}", "-m", "distributed.cli.dask_scheduler"]
c.ClusterConfig.worker_cmd = ["{python}", "-m", "distributed.cli.dask_worker"]
c.ClusterConfig.worker_cores = 1
c.ClusterConfig.worker_memory = "1 G"
c.ClusterConfig.idle_timeout = 60
"""


@pytest.fixture
def gateway_address(tmp_path: Path):
    """A local ``dask-gateway-server`` (processes as the current user, simple auth) bound to 127.0.0.1."""
    server = shutil.which("dask-gateway-server", path=str(Path(sys.executable).parent))
    if server is None:
        pytest.skip("dask-gateway-server is not installed")
    ports = {"api": free_port(), "proxy": free_port(), "tcp": free_port()}
    config = tmp_path / "gateway_config.py"
    config.write_text(GATEWAY_CONFIG.format(workdir=tmp_path, python=sys.executable, **ports))
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([server, "-f", str(config)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        address = f"http://127.0.0.1:{ports['proxy']}"
        deadline = time.monotonic() + 60
        while not _answers(f"{address}/api/health"):
            assert process.poll() is None, (tmp_path / "gateway.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "dask-gateway-server did not start within 60 s"
            time.sleep(0.5)
        yield address, f"gateway://127.0.0.1:{ports['tcp']}"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.timeout(180)
# dask_gateway's internal Gateway object complains from __del__ once its event loop has stopped.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_gateway_cluster_scales_to_one_worker_and_computes(gateway_address: tuple[str, str]) -> None:
    address, proxy = gateway_address
    config = settings_from_dict(
        {"cluster": {"kind": "gateway", "gateway": {"address": address, "proxy_address": proxy, "auth": "basic"}}}
    ).cluster
    with dask_client(config, workers=1, announce=False) as client:
        client.wait_for_workers(1, timeout=90)
        # A builtin: the gateway's workers cannot import this test module.
        assert client.submit(pow, 12, 2).result(timeout=60) == 144
        assert len(client.scheduler_info()["workers"]) == 1
        # Tuned like a local worker (cluster.gateway.gc_threshold): the processing code imported and frozen.
        assert [threshold[0] for threshold in client.run(gc.get_threshold).values()] == [20000]
        assert all(count > 100_000 for count in client.run(gc.get_freeze_count).values())


@pytest.fixture
def tls_scheduler(tmp_path: Path):
    """A ``dask scheduler`` that accepts only TLS clients presenting a certificate signed by its own CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(key),
         "-out", str(cert), "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = free_port()
    tls = ["--tls-ca-file", str(cert), "--tls-cert", str(cert), "--tls-key", str(key)]
    command = [sys.executable, "-m", "dask", "scheduler", "--protocol", "tls", "--host", "127.0.0.1",
               "--port", str(port), "--dashboard-address", "127.0.0.1:0", *tls]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"tls://127.0.0.1:{port}", cert, key
    finally:
        process.terminate()
        process.wait(30)


def test_tls_scheduler_needs_the_configured_certificates(tls_scheduler: tuple[str, Path, Path], tmp_path: Path) -> None:
    address, cert, key = tls_scheduler
    path = tmp_path / "casa.yaml"
    path.write_text(
        f"cluster:\n  kind: scheduler\n  scheduler:\n    address: {address}\n    timeout: 30\n"
        f"    tls: {{ca_file: {cert}, cert: {cert}, key: {key}}}\n"
    )
    with dask_client(load_config(path).cluster, announce=False) as client:
        assert client.scheduler.address == address
    path.write_text(path.read_text().replace(str(key), str(tmp_path / "nokey.pem")))
    with pytest.raises(DeployError, match="cluster.scheduler.tls.key: no such file"):
        with dask_client(load_config(path).cluster):
            pass
