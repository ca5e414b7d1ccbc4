"""One exception hierarchy: callers catch ``MaskstoreError`` or the builtin they already expect."""

from __future__ import annotations

from collections.abc import Iterable


class MaskstoreError(Exception):
    """Root of every error maskstore raises on purpose."""


class ArchiveError(MaskstoreError):
    """The file is not a maskstore archive, is damaged, or is from a newer format."""


class ReadOnlyError(MaskstoreError):
    """A write was attempted on a published version or a read-only archive."""


class VersionNotFoundError(MaskstoreError, KeyError):
    """No dataset version with that name or id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class VersionError(MaskstoreError, ValueError):
    """A version cannot be renamed or deleted as asked: the name is taken, or deleting a published
    version or one with children was not forced."""


class FrameNotFoundError(MaskstoreError, KeyError):
    """No frame with that id in the version."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class FrameError(MaskstoreError, ValueError):
    """A frame or frame dict is malformed: wrong types, duplicate ids, conflicting meta types."""


class MaskError(MaskstoreError):
    """A mask or image is missing, unreadable, oversized, or does not match its source."""


class MediaError(MaskError):
    """A URI could not be fetched or resolved."""


class QueryError(MaskstoreError, ValueError):
    """A query is malformed or does not type-check; carries line, column and a caret."""

    def __init__(self, message: str, *, query: str = "", line: int = 0, column: int = 0,
                 expected: str = "") -> None:
        self.query = query
        self.line = line
        self.column = column
        self.expected = expected
        self.message = message
        super().__init__(self._format())

    def _format(self) -> str:
        if not self.line:
            return self.message
        text_line = self.query.splitlines()[self.line - 1] if self.query.splitlines() else ""
        caret = " " * max(self.column - 1, 0) + "^"
        return f"{self.message} (line {self.line}, column {self.column})\n  {text_line}\n  {caret}"


class QuerySyntaxError(QueryError):
    """The query text does not parse. Besides the position (``line``, ``column``): ``token``, the text
    the parser stopped at (None at the end of the query, or for a problem inside a literal such as a
    bad escape), and ``expected_tokens``, what it would have accepted there, sorted: keywords and
    punctuation as written (``and``, ``)``, ``==``), classes of tokens in angle brackets (``<name>``,
    ``<string>``, ``<number>``, ``<end>``); empty where no token fits the case."""

    def __init__(self, message: str, *, query: str = "", line: int = 0, column: int = 0, expected: str = "",
                 token: str | None = None, expected_tokens: Iterable[str] = ()) -> None:
        self.token = token
        self.expected_tokens = sorted(set(expected_tokens))
        super().__init__(message, query=query, line=line, column=column, expected=expected)


class QueryTypeError(QueryError):
    """The query parses but does not check: an unknown field, an operator or value that does not fit a
    field, a meta value of another type than the version records. ``field`` is the field as written
    (``timestamp``, ``meta.city``, ``coverage()``, ``limit``); ``expected_type`` and ``found_type``
    name the clash where there is one (query types: ``str``, ``int``, ``float``, ``number``,
    ``bool``, ``null``, ``list``, ``dict``, ``rgb``, ``scalar``), else None."""

    def __init__(self, message: str, *, query: str = "", line: int = 0, column: int = 0, expected: str = "",
                 field: str | None = None, expected_type: str | None = None, found_type: str | None = None) -> None:
        self.field = field
        self.expected_type = expected_type
        self.found_type = found_type
        super().__init__(message, query=query, line=line, column=column, expected=expected)


class UnknownLabelWarning(UserWarning):
    """A query names a label the version does not have: its result is empty, most likely a typo."""


class NetworkFilesystemWarning(UserWarning):
    """The archive is on a network file system, where LMDB's locks and memory maps are not safe to write."""
