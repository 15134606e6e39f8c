"""Exceptions raised by the processing layer.

Every exception carries a message that names the problem (file, tree, branch, skim) in one line, so the
command line can print it without a traceback.
"""

from __future__ import annotations


class ProcessingError(Exception):
    """Base class of every error the processing layer raises on bad input."""


class DatasetResolutionError(ProcessingError):
    """The dataset could not be resolved (unknown release or skim, unreachable API, bad metadata file)."""


class InputFileError(ProcessingError):
    """An input file is missing, unreadable, not a ROOT file, or truncated."""


class SchemaError(ProcessingError):
    """An input file lacks the expected tree or branches, or has branches of the wrong type."""


class CertificateError(InputFileError):
    """An https server's certificate is not trusted (not signed by a CA in ``SSL_CERT_FILE`` or the system's).

    Attributes:
        url: the file whose server was refused.
    """

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


def first_line(error: BaseException, *, typed: bool = False, limit: int | None = None) -> str:
    """The first non-blank line of ``error``'s message (its type name when it has none), stripped.

    Errors are reported in one line (``error: ...``, a failed chunk's reason), and libraries' messages run to
    several. ``typed`` prefixes the type name, for errors that are not the project's own (``KeyError: 'x'``);
    ``limit`` cuts the line to that many characters. (The statistics layer has the same helper in
    ``stats.errors``: the two layers never import each other.)
    """
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    name = type(error).__name__
    line = (f"{name}: {text}" if typed else text) if text else name
    return line if limit is None else line[:limit]
