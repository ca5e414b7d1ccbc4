"""maskstore: frames and segmentation masks in one embedded archive, a query language, a renderer.

ClearML-style code runs with only its import changed: ``maskstore.use("city.maskstore")`` (or the
MASKSTORE_ARCHIVE environment variable) names the archive that ``DatasetVersion.create_version`` and
``DatasetVersion.get_version`` work on.
"""

from .errors import (ArchiveError, FrameError, FrameNotFoundError, MaskError, MaskstoreError, MediaError,
                     NetworkFilesystemWarning, QueryError, QuerySyntaxError, QueryTypeError, ReadOnlyError,
                     UnknownLabelWarning, VersionError, VersionNotFoundError)
from .archive import Archive, DatasetVersion, use
from .model import FrameGroup, Mask, Roi, SingleFrame, Source
from . import render  # the module, callable: maskstore.render(frame, version, ...) renders (spec section 6)

__version__ = "0.1.0"

__all__ = [
    "Archive", "ArchiveError", "DatasetVersion", "FrameError", "FrameGroup", "FrameNotFoundError", "Mask",
    "MaskError", "MaskstoreError", "MediaError", "NetworkFilesystemWarning", "QueryError", "QuerySyntaxError",
    "QueryTypeError", "ReadOnlyError", "Roi", "SingleFrame", "Source", "UnknownLabelWarning", "VersionError",
    "VersionNotFoundError", "render", "use",
]
