"""maskstore: frames and segmentation masks in one embedded archive, a query language, a renderer.

ClearML-style code runs with only its import changed: ``maskstore.use("city.maskstore")`` (or the
MASKSTORE_ARCHIVE environment variable) names the archive that ``DatasetVersion.create_version`` and
``DatasetVersion.get_version`` work on.
"""

from .errors import (ArchiveError, FrameError, FrameNotFoundError, MaskError, MaskstoreError, MediaError,
                     NetworkFilesystemWarning, QueryError, ReadOnlyError, UnknownLabelWarning, VersionError,
                     VersionNotFoundError)
from .archive import Archive, DatasetVersion, use
from .model import FrameGroup, Mask, Roi, SingleFrame, Source
from .render import render  # the function; the module stays importable as maskstore.render

__version__ = "0.1.0"

__all__ = [
    "Archive", "ArchiveError", "DatasetVersion", "FrameError", "FrameGroup", "FrameNotFoundError", "Mask",
    "MaskError", "MaskstoreError", "MediaError", "NetworkFilesystemWarning", "QueryError", "ReadOnlyError", "Roi",
    "SingleFrame", "Source", "UnknownLabelWarning", "VersionError", "VersionNotFoundError", "render", "use",
]
