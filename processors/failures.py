"""The failure model: what can go wrong with a chunk or a file, and which failures a retry can mend.

Every chunk of a run either contributes to the histograms or is listed as a :class:`FailedChunk` with its
:class:`FailureKind`; a file that cannot be opened is one failed chunk covering the whole file (``entry_stop``
None). :func:`classify` turns an exception raised while reading a file into a kind and a one-line error:
a missing or corrupt file, a missing tree or branch and an untrusted server certificate are permanent; network
trouble is transient and retried with back-off inside the task that met it.
"""

from __future__ import annotations

import enum
import os
import re
import ssl
import zlib
from typing import NamedTuple

from processors.datasets import is_remote
from processors.errors import CertificateError, InputFileError, ProcessingError, SchemaError, first_line


class FailureKind(str, enum.Enum):
    """Why a chunk or file failed. A plain string too (``"corrupt"``): it compares, hashes, formats and writes to
    JSON as its value."""

    #: No such file, not a file, or no permission (locally or on the server).
    MISSING = "missing"
    #: Not a ROOT file, truncated, or a basket that cannot be inflated or deserialized.
    CORRUPT = "corrupt"
    #: The tree or a branch is missing, or a branch has the wrong type.
    SCHEMA = "schema"
    #: An https server whose certificate is not trusted: every read of that server fails the same way.
    CERTIFICATE = "certificate"
    #: Network trouble (a lost connection, a time-out, a stopped server) that outlasted the retries.
    TRANSIENT = "transient"
    #: The task was lost with its worker (killed, out of memory) or raised where the engine did not expect it.
    WORKER = "worker"
    #: The processor or the reader raised an exception that is none of the above (a bug): listed, never lost.
    ERROR = "error"

    __hash__ = str.__hash__
    __str__ = str.__str__
    __format__ = str.__format__

    @property
    def permanent(self) -> bool:
        """True if neither a retry nor a resumed run can mend it: the file, or the reader's settings, must change."""
        return self in PERMANENT


#: Kinds that a retry or a resumed run cannot mend.
PERMANENT = frozenset({FailureKind.MISSING, FailureKind.CORRUPT, FailureKind.SCHEMA, FailureKind.CERTIFICATE})


class FailedChunk(NamedTuple):
    """A chunk that could not be processed; ``entry_stop`` is None when the file could not be opened."""

    file: str
    entry_start: int
    entry_stop: int | None
    error: str
    kind: FailureKind

    @classmethod
    def of(cls, file: str, entry_start: int, entry_stop: int | None, error: BaseException,
           kind: FailureKind) -> FailedChunk:
        """The failure of a chunk (or file) that raised ``error``, reported in one line: its message's first line,
        after its type for errors that are not the project's own."""
        return cls(file, entry_start, entry_stop, first_line(error, typed=not isinstance(error, ProcessingError)), kind)


#: XRootD server answers that are final, not worth a retry (error codes of XProtocol.hh): not authorized, no such
#: file, not a file, a directory, authentication failed make the file missing; an invalid argument or a
#: file-system error, as for a read past the end of a truncated file ("illegal seek"), make it corrupt. Other
#: answers (overloaded, timed out, no server, ...) and lost connections stay transient.
XROOTD_MISSING, XROOTD_CORRUPT = {"3010", "3011", "3015", "3016", "3030"}, {"3000", "3005"}


def _inflate_errors() -> tuple[type[BaseException], ...]:
    """What inflating a damaged ZLIB basket raises (isal's error is not a ``zlib.error``)."""
    try:
        from isal import isal_zlib
    except ImportError:
        return (zlib.error,)
    return (zlib.error, isal_zlib.error)


INFLATE_ERRORS = _inflate_errors()


def classify(error: BaseException, url: str) -> tuple[FailureKind, BaseException]:
    """The failure kind of an exception raised while reading ``url``, and the error to report (one line).

    Raises:
        BaseException: ``error`` itself when it is none of the kinds (the caller decides: a bug is listed as
            :attr:`FailureKind.ERROR` by the chunk reader).
    """
    import uproot

    untrusted = _certificate_failure(error)
    if untrusted is not None:
        return FailureKind.CERTIFICATE, CertificateError(_untrusted_message(url, untrusted), url)
    if isinstance(error, SchemaError):
        return FailureKind.SCHEMA, error
    if isinstance(error, InputFileError):
        return FailureKind.CORRUPT, error
    if isinstance(error, uproot.KeyInFileError):
        key = error.key if isinstance(error.key, str) else str(error.key)
        return FailureKind.SCHEMA, SchemaError(f"{url}: {key!r} not found")
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)) and not is_remote(url):
        # uproot's memory-mapped source raises FileNotFoundError with a multi-line hint and no strerror.
        reason = error.strerror or ("No such file or directory" if isinstance(error, FileNotFoundError) else first_line(error, typed=True))
        return FailureKind.MISSING, InputFileError(f"{url}: {reason}")
    if isinstance(error, OSError) and is_remote(url):
        code = re.search(r"Server responded with an error: \[(\d+)\]", str(error))
        reason = " ".join(str(error).split())[:200]
        if code is not None and code[1] in XROOTD_MISSING:
            return FailureKind.MISSING, InputFileError(f"{url}: {reason}")
        if (code is not None and code[1] in XROOTD_CORRUPT) or str(error).startswith("expected Chunk of length"):
            return FailureKind.CORRUPT, InputFileError(f"{url}: not a readable ROOT file ({reason})")
    if isinstance(error, TimeoutError) and not str(error).strip():
        return FailureKind.TRANSIENT, _timed_out(url, type(error).__name__)  # fsspec's bare FSTimeoutError
    if isinstance(error, (TimeoutError, ConnectionError)) or (isinstance(error, OSError) and is_remote(url)):
        return FailureKind.TRANSIENT, error
    if isinstance(error, ValueError) and is_remote(url) and "closed file" in str(error):
        return FailureKind.TRANSIENT, error  # a handle closed by a lost connection ("I/O operation on closed file")
    if isinstance(error, TypeError) and is_remote(url) and _raised_in(error, "uproot/source/coalesce.py"):
        # uproot's coalesced reads slice what a failed range returned, so a lost https connection surfaces
        # as "TypeError: 'ClientConnectorError' object is not subscriptable", a stalled one as 'TimeoutError'.
        lost = re.match(r"'(\w+)' object is not subscriptable", str(error))
        if lost is not None and "Timeout" in lost[1]:
            return FailureKind.TRANSIENT, _timed_out(url, lost[1])
        return FailureKind.TRANSIENT, error
    if isinstance(error, (OSError, ValueError, *INFLATE_ERRORS, uproot.deserialization.DeserializationError)):
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        return FailureKind.CORRUPT, InputFileError(f"{url}: not a readable ROOT file ({reason})")
    raise error


def _timed_out(url: str, name: str) -> TimeoutError:
    """The one-line error of a read of ``url`` that the time-out ended (``name``: what the reader raised)."""
    return TimeoutError(f"{url}: no answer within the time-out ({name})")


def _certificate_failure(error: BaseException) -> str | None:
    """The verifier's reason if ``error`` (or one it was raised from) is a refused server certificate, else None.

    aiohttp's ``ClientConnectorCertificateError`` is an ``ssl.SSLCertVerificationError``; uproot's coalesced
    reads can turn it into a ``TypeError`` that only names it.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, CertificateError):
            return None
        if isinstance(error, ssl.SSLCertVerificationError):
            original = getattr(error, "certificate_error", error)  # aiohttp's wraps the ssl module's
            return getattr(original, "verify_message", None) or "certificate verify failed"
        if isinstance(error, TypeError) and "CertificateError" in str(error):
            return "certificate verify failed"
        error = error.__cause__ or error.__context__
    return None


def _untrusted_message(url: str, reason: str) -> str:
    cafile = os.environ.get("SSL_CERT_FILE")
    trusted = f"SSL_CERT_FILE={cafile} does not sign it" if cafile else "SSL_CERT_FILE is not set"
    return (f"{url}: the server's certificate is not trusted ({reason}; {trusted}); "
            "set SSL_CERT_FILE to the certificate, or CA bundle, that signs it")


def _raised_in(error: BaseException, path: str) -> bool:
    """True if the innermost frame of ``error``'s traceback is in a file ending with ``path``."""
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback is not None and traceback.tb_frame.f_code.co_filename.replace("\\", "/").endswith(path)


def worker_failure(file: str, entry_start: int, entry_stop: int | None, error: BaseException) -> FailedChunk:
    """The failure of a chunk (or, ``entry_stop`` None, a file) whose task raised ``error`` or died with its worker."""
    return FailedChunk.of(file, entry_start, entry_stop, error, FailureKind.WORKER)
