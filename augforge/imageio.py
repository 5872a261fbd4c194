"""Safe image decoding: one place that turns a file into ``uint8[H, W, 3]`` RGB."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from augforge.errors import DataError


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path`` to RGB uint8; raise ``DataError`` naming the file and the fix."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; fix the path or pass --skip-bad") from None
    except Exception as exc:
        raise DataError(f"{path}: cannot decode image ({exc}); replace the file or pass --skip-bad") from None
