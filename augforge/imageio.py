"""Safe image decoding: one place that turns a file into ``uint8[H, W, 3]`` RGB.

Every odd input a dermoscopy archive holds is either converted correctly or refused with a
``DataError`` naming the file and the fix:

- greyscale (``L``, ``1``), palette, CMYK, YCbCr: converted to RGB;
- transparency (``RGBA``, ``LA``, palette with a transparent colour): composited over white,
  so transparent pixels never leak their hidden colour;
- 16-bit greyscale PNG (``I;16``, ``I``): scaled to 8 bits (``v / 257``), never clipped;
  16-bit RGB PNGs are reduced by Pillow to their high byte (also a correct scaling);
- EXIF orientation is applied;
- empty, truncated, corrupt and non-image files, and images larger than
  ``PIL.Image.MAX_IMAGE_PIXELS`` (decompression bombs) raise ``DataError``.
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

from augforge.errors import DataError

#: file name extensions the file-based dataset plugins treat as images
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# A truncated JPEG must fail, not come back with a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def _limit() -> int | None:
    """The pixel limit: ``AUGFORGE_MAX_IMAGE_PIXELS`` when set (it then becomes Pillow's)."""
    from augforge import envvars

    env = envvars.get("AUGFORGE_MAX_IMAGE_PIXELS")
    if env is not None:
        Image.MAX_IMAGE_PIXELS = env
    return Image.MAX_IMAGE_PIXELS


def read_rgb(path: str | os.PathLike, min_side: int = 0) -> np.ndarray:
    """Decode ``path`` to RGB uint8; raise ``DataError`` naming the file and the fix.

    ``min_side`` (pixels) lets JPEG decoding use DCT scaling (``Image.draft``) down to the
    smallest scale whose shorter side is still at least ``min_side``; 0 decodes full size.
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; fix the path or pass --skip-bad") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc}); check permissions or pass --skip-bad") from None
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes); replace it or pass --skip-bad")
    limit = _limit()
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and fails above twice that: both are errors here
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if min_side and im.format == "JPEG":
                    w, h = im.size
                    scale = max(1, min(8, min(w, h) // min_side))
                    im.draft("RGB", (max(1, w // scale), max(1, h // scale)))
                im.load()
                return to_rgb(ImageOps.exif_transpose(im))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else "the image"
        raise DataError(
            f"{path}: {pixels} exceeds the limit of {limit:,} pixels (PIL.Image.MAX_IMAGE_PIXELS; a possible "
            f"decompression bomb); downscale the file, raise the limit with AUGFORGE_MAX_IMAGE_PIXELS, or pass --skip-bad"
        ) from None
    except Image.UnidentifiedImageError:
        raise DataError(f"{path}: not an image file Pillow can read; remove or replace it, or pass --skip-bad") from None
    except DataError:
        raise
    except Exception as exc:  # truncated data, broken headers, decoder errors
        what = "truncated image data" if "truncat" in str(exc).lower() else "cannot decode image"
        raise DataError(f"{path}: {what} ({exc}); replace the file or pass --skip-bad") from None


def to_rgb(im: Image.Image) -> np.ndarray:
    """Convert a loaded PIL image of any supported mode to ``uint8[H, W, 3]`` RGB."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: Pillow's own convert() would clip everything above 255 to white.
        a = np.asarray(im, dtype=np.float64)
        if a.min() < 0 or a.max() > 65535:
            raise DataError(f"mode {mode} image with values outside 0..65535; save it as 8- or 16-bit PNG")
        grey = np.floor(a / 257.0 + 0.5).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        raise DataError("floating-point (mode F) images have no defined 0..255 range; save it as 8- or 16-bit PNG")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    elif mode in ("L", "1") and "transparency" in im.info:
        im = im.convert("LA")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)
