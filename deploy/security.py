"""TLS for an existing Dask scheduler: the client's ``Security`` from the config, and TLS failures in words.

coffea-casa's scheduler is ``tls://localhost:8786``: every connection presents a certificate signed by the
facility's CA and checks the other end's. ``cluster.scheduler.tls`` names the files (CA, client certificate, key);
left empty, the Dask config's ``distributed.comm.tls.*`` apply (coffea-casa sets them in its notebooks).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from distributed.security import Security

from deploy.config import TLSSettings
from deploy.errors import DeployError

__all__ = ["client_security", "tls_problem"]

#: The config keys of the TLS files, by :class:`~deploy.config.TLSSettings` field.
_KEYS = {"ca_file": "cluster.scheduler.tls.ca_file", "cert": "cluster.scheduler.tls.cert",
         "key": "cluster.scheduler.tls.key"}


def client_security(tls: TLSSettings | None) -> Security | None:
    """The client's ``distributed.security.Security`` for the configured files.

    Args:
        tls: the ``cluster.scheduler.tls`` settings; None, or no file named, leaves the Dask config's.

    Returns:
        The security object, or None for the Dask config's.

    Raises:
        DeployError: a named file does not exist.
    """
    if tls is None or not any(getattr(tls, name) for name in _KEYS):
        return None
    for name, key in _KEYS.items():
        path = getattr(tls, name)
        if path is not None and not Path(path).is_file():
            raise DeployError(f"{key}: no such file {path}")
    return Security(
        tls_ca_file=tls.ca_file,
        tls_client_cert=tls.cert,
        tls_client_key=tls.key or tls.cert,  # PEM files may hold both (coffea-casa's hostcert.pem does)
        require_encryption=tls.require_encryption,
    )


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def tls_problem(address: str, error: BaseException, tls: TLSSettings | None) -> str | None:
    """Why connecting to ``address`` failed, in one line, when TLS is the reason; None otherwise.

    Args:
        address: the scheduler's address.
        error: what ``distributed.Client`` raised.
        tls: the configured TLS settings (named in the message).
    """
    where = f"the Dask scheduler at {address}"
    configured = tls is not None and any(getattr(tls, name) for name in _KEYS)

    def named(field: str, fallback: str) -> str:
        value = getattr(tls, field) if configured else None
        return f"{_KEYS[field]} ({value})" if value else fallback

    chain = _causes(error)
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or str(cause)
            return (f"TLS: the certificate of {where} is not trusted by "
                    f"{named('ca_file', 'the Dask config CA (distributed.comm.tls.ca-file)')}: {reason}")
    if not address.startswith("tls://"):
        return None
    for cause in chain:
        if isinstance(cause, TypeError) and "ssl_context" in str(cause):
            return (f"TLS: {where} needs a client certificate and key: set cluster.scheduler.tls (ca_file, cert, key)"
                    " or the Dask config's distributed.comm.tls.ca-file and distributed.comm.tls.client.cert/key")
        if isinstance(cause, ssl.SSLError):  # the handshake ended from the other side
            return (f"TLS: {where} closed the connection during the handshake: it probably does not accept this "
                    f"client's certificate, {named('cert', 'the Dask config one (distributed.comm.tls.client.cert)')}"
                    f" ({type(cause).__name__}: {cause.reason or cause})")
    return None
