"""Image loading and resizing exactly as the official ``qwen_vl_utils`` does it.

Qwen3-VL sees an image as a grid of 32x32-pixel tokens (patch 16, merge 2). The official
pipeline composites RGBA on white, converts other modes to RGB, rounds each side to a
multiple of 32 (Python's round-half-to-even), scales into [min_pixels, max_pixels] and
resizes with PIL bicubic. mtmd is then told to accept that size as is (image min/max
tokens), because its own resize pads and rounds differently.
"""

from __future__ import annotations

import io
import math
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ImageError

if TYPE_CHECKING:
    from PIL import Image

    from .inputs import ImageSource

PATCH_SIZE = 16
MERGE_SIZE = 2
FACTOR = PATCH_SIZE * MERGE_SIZE  # pixels per image token side
MIN_TOKENS = 4
MAX_TOKENS = 1800
MIN_PIXELS = MIN_TOKENS * FACTOR * FACTOR
MAX_PIXELS = MAX_TOKENS * FACTOR * FACTOR
MAX_RATIO = 200
# Refuse to decode anything larger than this many pixels (decompression bombs, giant scans).
MAX_SOURCE_PIXELS = 200_000_000


def smart_resize(
    height: int,
    width: int,
    factor: int = FACTOR,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """Target (height, width) for an image, as ``qwen_vl_utils.smart_resize``."""
    if min(height, width) <= 0:
        raise ImageError(f"image has no pixels ({width}x{height})")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ImageError(
            f"image aspect ratio {max(height, width) / min(height, width):.0f}:1 is over "
            f"the model's limit of {MAX_RATIO}:1"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def to_rgb(image: Image.Image) -> Image.Image:
    """RGBA on a white background; every other mode through ``convert("RGB")``."""
    from PIL import Image

    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.split()[3])
        return background
    return image.convert("RGB")


def _describe(source: ImageSource) -> str:
    if isinstance(source, bytes):
        return f"image bytes ({len(source)} bytes)"
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    return "PIL image"


def check_pixels(source: str | os.PathLike[str], max_pixels: int, *, what: str = "") -> None:
    """Raise ``ImageError`` unless the image file's header says it has at most
    ``max_pixels`` pixels (nothing is decoded)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    what = what or _describe(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(os.fspath(source)) as image:
                width, height = image.size
    except UnidentifiedImageError as err:
        raise ImageError(f"{what}: not an image or an unsupported format") from err
    except Image.DecompressionBombError as err:
        raise ImageError(f"{what}: image too large ({err})") from err
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"{what}: corrupt or unreadable image ({err})") from err
    _check_size(what, width, height, max_pixels)


def _check_size(what: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            f"{what}: image too large ({width}x{height} pixels; "
            f"the limit is {max_pixels / 1e6:g} megapixels)"
        )


def load_image(
    source: ImageSource,
    *,
    max_pixels: int | None = None,
    draft: tuple[int, int] | None = None,
) -> Image.Image:
    """Open and fully decode an image (path, bytes or PIL), EXIF orientation applied.

    The pixel count is checked from the header, before anything is decoded (a 20 KB PNG
    can claim 13000x13000 pixels). ``draft``: a JPEG may be decoded at a reduced scale
    that still covers this size. Raises ``ImageError`` for a missing, unreadable, corrupt,
    truncated or oversized image. A PIL image given by the caller is taken as already
    oriented. ``max_pixels`` defaults to ``MAX_SOURCE_PIXELS``.
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source
    what = _describe(source)
    limit = MAX_SOURCE_PIXELS if max_pixels is None else max_pixels
    try:
        image: Image.Image
        with warnings.catch_warnings():  # our own limit decides, below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if isinstance(source, bytes):
                image = Image.open(io.BytesIO(source))
            else:
                image = Image.open(os.fspath(source))
        _check_size(what, image.width, image.height, limit)
        if draft is not None:
            image.draft("RGB", draft)
        image.load()  # decode now, so truncation surfaces here and not inside the model
        image = ImageOps.exif_transpose(image) or image
    except ImageError:
        raise
    except FileNotFoundError as err:
        raise ImageError(f"{what}: file not found") from err
    except IsADirectoryError as err:
        raise ImageError(f"{what}: is a folder, not an image") from err
    except PermissionError as err:
        raise ImageError(f"{what}: permission denied") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{what}: not an image or an unsupported format") from err
    except Image.DecompressionBombError as err:
        raise ImageError(f"{what}: image too large ({err})") from err
    except (OSError, ValueError, SyntaxError) as err:
        # PIL reports truncated and corrupt data as OSError/ValueError/SyntaxError.
        raise ImageError(f"{what}: corrupt or truncated image ({err})") from err
    return image


def release_memory() -> None:
    """Hand freed heap memory back to the OS. glibc keeps the freed pixels of a large
    image in its heap (a 40 MP query image left the page 160 MB larger for good)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl): nothing to trim
        return
    trim(0)


@dataclass(frozen=True)
class PreparedImage:
    """RGB pixels at the size the model will see; ``tokens`` = image tokens in the prompt."""

    width: int
    height: int
    rgb: bytes

    @property
    def tokens(self) -> int:
        return (self.width // FACTOR) * (self.height // FACTOR)


def prepare_image(
    source: ImageSource, *, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> PreparedImage:
    """Load, convert and resize an image the way the official pipeline does."""
    from PIL import Image

    image = to_rgb(load_image(source))
    height, width = smart_resize(image.height, image.width, FACTOR, min_pixels, max_pixels)
    if (width, height) != image.size:
        image = image.resize((width, height), resample=Image.Resampling.BICUBIC)
    return PreparedImage(width=width, height=height, rgb=image.tobytes())
