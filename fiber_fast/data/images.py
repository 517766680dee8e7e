"""Image decoding that reports the file: a missing or corrupt (e.g. truncated) image raises DataError."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageFile

from fiber_fast.data.errors import DataError


def _decode(image: Image.Image) -> Image.Image:
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # a process-wide PIL switch that would hide truncated files
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; fiber_fast.data needs it False "
                           "to report truncated images")
    image.load()
    return image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Decode ``path`` to an RGB PIL image (fully, so truncation is found here, not later)."""
    try:
        with Image.open(path) as image:
            return _decode(image)
    except FileNotFoundError as error:
        raise DataError("image", str(path), "file not found") from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError("image", str(path), f"cannot decode ({error})") from error


def decode_image_bytes(data: bytes, source: str) -> Image.Image:
    """Decode encoded image bytes (e.g. a shard member) to RGB; ``source`` names it in errors."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _decode(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError("image", source, f"cannot decode ({error})") from error
