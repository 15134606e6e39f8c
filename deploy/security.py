"""TLS for an existing Dask scheduler: the client's ``Security`` from the config, and TLS failures in words.

coffea-casa's scheduler is ``tls://localhost:8786``: every connection presents a certificate signed by the
facility's CA and checks the other end's. ``cluster.scheduler.tls`` names the files (CA, client certificate, key);
left empty, the Dask config's ``distributed.comm.tls.*`` apply (coffea-casa sets them in its notebooks).
"""

from __future__ import annotations

import re
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
    # distributed sometimes keeps only the text of the ssl error ("...: SSLError: [SSL: CODE] reason (_ssl.c:N)").
    text = " ".join(str(cause) for cause in chain)
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _untrusted(where, named, cause.verify_message or str(cause))
    if "CERTIFICATE_VERIFY_FAILED" in text:
        found = re.search(r"certificate verify failed: ([^(]+)", text)
        return _untrusted(where, named, found.group(1).strip() if found else "certificate verify failed")
    if not address.startswith("tls://"):
        return None
    if any(isinstance(cause, TypeError) and "ssl_context" in str(cause) for cause in chain):
        return (f"TLS: {where} needs a client certificate and key: set cluster.scheduler.tls (ca_file, cert, key)"
                " or the Dask config's distributed.comm.tls.ca-file and distributed.comm.tls.client.cert/key")
    reasons = [f"{type(cause).__name__}: {cause.reason or cause}" for cause in chain if isinstance(cause, ssl.SSLError)]
    if not reasons:
        found = re.search(r"(SSL\w*Error): \[SSL: \w+\] ([^(]+)", text) or re.search(r"(SSL\w*Error): ([^(]+)", text)
        reasons = [f"{found.group(1)}: {found.group(2).strip()}"] if found else []
    if reasons:  # the handshake ended from the other side (an alert, or the connection closed)
        return (f"TLS: {where} closed the connection during the handshake: it probably does not accept this "
                f"client's certificate, {named('cert', 'the Dask config one (distributed.comm.tls.client.cert)')}"
                f" ({reasons[0]})")
    return None


def _untrusted(where: str, named, reason: str) -> str:
    return (f"TLS: the certificate of {where} is not trusted by "
            f"{named('ca_file', 'the Dask config CA (distributed.comm.tls.ca-file)')}: {reason}")
