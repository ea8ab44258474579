"""Image validation: size, pixel count, format, and a full decode, before anything is stored."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

ALLOWED_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}


class ImageRejected(ValueError):
    """The bytes are not an image this project accepts; the message says why."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000  # one image
    # One prompt (multi-image rows, conversations): what a policy's context can hold.
    max_images: int = 16
    max_total_pixels: int = 80_000_000


@dataclass(frozen=True)
class ValidImage:
    data: bytes
    sha256: str
    format: str
    extension: str
    width: int
    height: int

    @property
    def storage_name(self) -> str:
        # Content-addressed, fanned out so that no folder grows to millions of files.
        return f"images/{self.sha256[:2]}/{self.sha256}.{self.extension}"


def check_image_count(count: int, limits: ImageLimits) -> None:
    """Refuse a prompt with more images than `limits.max_images` (before any is decoded)."""
    if count > limits.max_images:
        raise ImageRejected(
            f"{count} images; a prompt may have at most {limits.max_images} "
            "(IMPORT_MAX_PROMPT_IMAGES)"
        )


def check_total_pixels(images: list[ValidImage], limits: ImageLimits) -> None:
    """Refuse a prompt whose images hold more than `limits.max_total_pixels` together."""
    pixels = sum(i.width * i.height for i in images)
    if pixels > limits.max_total_pixels:
        raise ImageRejected(
            f"the images hold {pixels:,} pixels together; a prompt may hold at most "
            f"{limits.max_total_pixels:,} (IMPORT_MAX_PROMPT_PIXELS)"
        )


def has_image_header(data: bytes) -> bool:
    """Whether Pillow recognises `data` as an image from its header (nothing is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)):
                return True
    except Image.DecompressionBombError:
        return True  # an image all the same: validate_image refuses it with that reason
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False


def validate_image(data: bytes, limits: ImageLimits) -> ValidImage:
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageRejected("image is empty")
    if len(data) > limits.max_bytes:
        raise ImageRejected(f"image is {len(data):,} bytes; the limit is {limits.max_bytes:,}")
    try:
        with warnings.catch_warnings():
            # Pillow warns before it raises; the pixel check below is the one that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or ""
                width, height = probe.size
                # Header only so far: refuse bombs before a single pixel is decoded.
                if width * height > limits.max_pixels:
                    raise ImageRejected(
                        f"image is {width}x{height} = {width * height:,} pixels; the limit is "
                        f"{limits.max_pixels:,} (possible decompression bomb)"
                    )
                if fmt not in ALLOWED_FORMATS:
                    allowed = ", ".join(sorted(ALLOWED_FORMATS))
                    raise ImageRejected(f"image format {fmt or 'unknown'} is not one of {allowed}")
                probe.verify()
            # verify() leaves the file unusable and misses truncated pixel data: decode fully.
            with Image.open(io.BytesIO(data)) as full:
                full.load()
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected("not an image (Pillow cannot identify the file)") from None
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"possible decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"broken image: {exc}") from None
    return ValidImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        format=fmt,
        extension=ALLOWED_FORMATS[fmt],
        width=width,
        height=height,
    )
