"""Pure core of prompt imports: read a file, validate every row, never touch the database.

`parse_source(path, fmt, limits)` returns the valid records and a row-level report; the
service decides, from the report, whether anything is written (all-or-nothing by default).
"""

from datasets_app.core.imports.images import ImageLimits, ImageRejected, ValidImage, validate_image
from datasets_app.core.imports.records import (
    FORMATS,
    ParseResult,
    PromptRecord,
    RowError,
    parse_source,
)

__all__ = [
    "FORMATS",
    "ImageLimits",
    "ImageRejected",
    "ParseResult",
    "PromptRecord",
    "RowError",
    "ValidImage",
    "parse_source",
    "validate_image",
]
