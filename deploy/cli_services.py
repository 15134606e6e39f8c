"""``opendata-stats serve``: a local XRootD server over a directory of ROOT files."""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path

import click

from deploy.cli_options import config_option, settings_from_flags
from deploy.errors import DeployError
from deploy.xrootd import CLIENT_ENV, XRootDServer

#: What to install when the ``xrootd`` daemon is missing (pip's ``xrootd`` package is only the client).
XROOTD_PACKAGE = ("serve needs the xrootd daemon, which is not on PATH: install the system package xrootd-server "
                  "(e.g. apt-get install xrootd-server; pip's xrootd package provides only the client)")


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@config_option
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="root:// port (0: a free one)."
)
@click.option(
    "--http-port", type=click.IntRange(0, 65535), default=0, show_default=True, help="https:// port (0: a free one)."
)
@click.option("--no-http", is_flag=True, help="Serve root:// only.")
@click.option("--plain-http", is_flag=True, help="Serve http:// instead of https:// (no certificate).")
@click.option(
    "--metadata-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write metadata.json and metadata-https.json (default: DIRECTORY).",
)
@click.pass_context
def serve(
    ctx: click.Context, directory: Path, port: int, http_port: int, no_http: bool, plain_http: bool,
    metadata_dir: Path | None, config_path: Path | None,
) -> None:
    """Serve DIRECTORY's ROOT files read-only over root:// and https:// on 127.0.0.1 until Ctrl-C.

    Writes metadata.json (root:// URLs) and metadata-https.json (https:// URLs) for
    `opendata-stats process --metadata FILE`. https uses a self-signed certificate: readers need
    SSL_CERT_FILE set to the printed certificate path. Needs the system package xrootd-server.
    """
    settings_from_flags(ctx, {})  # a --config file is validated like every command's; serve takes no setting from it
    if shutil.which("xrootd") is None:
        raise DeployError(XROOTD_PACKAGE)
    server = XRootDServer(directory, port=port, http_port=None if no_http else http_port, tls=not plain_http)
    stop = threading.Event()
    # SIGTERM ends the server as cleanly as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        handle = server.start()
        target = metadata_dir or directory
        target.mkdir(parents=True, exist_ok=True)
        try:
            written = server.write_metadata(target)
        except (DeployError, OSError) as err:
            written = {}
            click.echo(f"warning: no metadata written ({err})", err=True)
        click.echo(f"root: {handle.root_url}")
        if handle.http_url:
            click.echo(f"{handle.http_url.split(':', 1)[0]}: {handle.http_url}")
        if handle.ca_file:
            click.echo(f"certificate: {handle.ca_file} (export SSL_CERT_FILE={handle.ca_file})")
        for protocol, path in written.items():
            click.echo(f"metadata ({protocol}): {path}")
        click.echo("client settings for restarts: " + " ".join(f"{k}={v}" for k, v in CLIENT_ENV.items()))
        click.echo("serving; Ctrl-C to stop", err=True)
        while not stop.wait(0.5):
            if not server.running:
                raise DeployError(f"xrootd exited unexpectedly; see {handle.log_file}")
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
    click.echo("stopped", err=True)
