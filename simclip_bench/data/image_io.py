"""Reading an image file as the 8-bit RGB picture a model sees: the one reader behind every image input.

``PIL.Image.convert("RGB")`` alone reads many files wrongly and silently: a 16-bit PNG (mode ``I;16``)
is clipped at 255, so nearly every pixel comes out white; transparency is dropped, showing whatever
colour the transparent pixels happen to hold; a phone photo stored sideways stays sideways.
:func:`read_rgb` reads every mode PIL can open:

* **Orientation**: the EXIF orientation tag is applied first (``ImageOps.exif_transpose``).
* **Integers of more than 8 bits** (``I;16``, ``I;16B``, ``I;16L``, ``I``): scaled by the bit depth the
  file declares, not by the values present: 16-bit PNG, PGM/PPM and TIFF map 65535 to white, a 32-bit
  TIFF its ``BitsPerSample`` maximum. A 12-bit image stored in 16 bits therefore keeps the file's scale
  (it looks dark, as in any viewer); rescale it to the full 16 bits before use if that is not meant.
* **Floating point** (``F``, e.g. a single-channel float TIFF): taken as intensities in [0, 1]. Values
  outside [0, 1] by more than half an 8-bit level (1/510: rounding), NaN or infinity are refused with
  :class:`ImageReadError` rather than clipped: such a file holds some other unit (0..255, HDR radiance).
* **Transparency** (``RGBA``, ``LA``, ``PA``, ``RGBa``, and ``P``/``L``/``RGB`` with a transparency key):
  composited on a white background, as a browser shows it on a white page.
* **Everything else** (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``): PIL's own
  conversion (CMYK by PIL's formula, without colour management).
* **Decompression bombs**: a file that declares more pixels than Pillow's limit
  (``PIL.Image.MAX_IMAGE_PIXELS``, 89.5 million by default), where Pillow would warn (up to twice the
  limit) or refuse (beyond), is refused with :class:`ImageReadError` before it is decoded: a small file
  must not fill the memory, and no benchmark image is that large.

The result is always quantised to 8 bits per channel (rounded), the precision of every other image
and of the model's preprocessing. An image that cannot be read faithfully raises
:class:`ImageReadError` (a ``ValueError``) with one line saying what is wrong and how to fix it; a file
that is no image raises PIL's own ``UnidentifiedImageError``. Callers report both through the
unreadable-image path (:mod:`simclip_bench.data.unreadable`).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
FLOAT_TOLERANCE = 1 / 510  # half an 8-bit level: what rounding to 8 bits absorbs anyway
_TIFF_BITS_PER_SAMPLE, _TIFF_SAMPLE_FORMAT = 258, 339
_TIFF_SIGNED = 2
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


class ImageReadError(ValueError):
    """An image PIL opens but that cannot be read faithfully (e.g. float values outside [0, 1])."""


def read_rgb(source: str | Path | BinaryIO) -> Image.Image:
    """The image in ``source`` (a path or a binary file) as an 8-bit RGB PIL image; see the module docstring.

    Raises ``FileNotFoundError``, ``PIL.UnidentifiedImageError`` (not an image) or :class:`ImageReadError`.
    """
    try:
        with warnings.catch_warnings():  # Pillow only warns between 1x and 2x its limit: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
        with image:
            full_scale = _integer_full_scale(image)  # from the file's header, before the transpose drops it
            return _to_rgb(ImageOps.exif_transpose(image), full_scale)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"refused as a possible decompression bomb ({str(e).split(', could')[0]}); "
                             "downscale it to a usual size") from None
    except UnidentifiedImageError:
        if _is_tiff(source):
            raise ImageReadError("a TIFF that Pillow cannot decode (multi-channel floating point is not supported); "
                                 "save it as 8- or 16-bit integers, or as a single-channel float TIFF") from None
        raise


def square_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """(3, size, size) in [0,1] from an RGB image: shorter side resized to ``size`` (bicubic), centre-cropped."""
    if image.size != (size, size):
        w, h = image.size
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def _to_rgb(image: Image.Image, full_scale: int | None) -> Image.Image:
    if image.mode.startswith("I"):
        return _gray_to_rgb(_scaled_integers(np.asarray(image), full_scale))
    if image.mode == "F":
        return _gray_to_rgb(_checked_floats(np.asarray(image, dtype=np.float64)))
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _integer_full_scale(image: Image.Image) -> int | None:
    """The value that means white in an integer image of more than 8 bits (None for other modes)."""
    if image.mode.startswith("I;16"):
        return 65535
    if image.mode != "I":
        return None
    if image.format in ("PNG", "PPM"):  # PIL widens 16-bit PNG (older versions) and PGM/PPM (any maxval) to 16 bits
        return 65535
    tags = getattr(image, "tag_v2", None)
    if image.format == "TIFF" and tags is not None and tags.get(_TIFF_BITS_PER_SAMPLE):
        bits = int(tags[_TIFF_BITS_PER_SAMPLE][0])
        signed = tags.get(_TIFF_SAMPLE_FORMAT, (1,))[0] == _TIFF_SIGNED
        return 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
    raise ImageReadError(f"a {image.format or 'raw'} image of 32-bit integers whose bit depth the file does not say; "
                         "save it as an 8- or 16-bit PNG")


def _scaled_integers(values: np.ndarray, full_scale: int | None) -> np.ndarray:
    if full_scale is None:  # pragma: no cover - every integer mode has a scale or raised
        raise ImageReadError("an integer image of unknown bit depth; save it as an 8- or 16-bit PNG")
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > full_scale:
        raise ImageReadError(f"integer values in [{low:.0f}, {high:.0f}] do not fit the file's bit depth "
                             f"(0..{full_scale}); save it as an unsigned 8- or 16-bit image")
    return values / full_scale


def _checked_floats(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise ImageReadError("a float image with NaN or infinite values; save it with intensities in [0, 1] "
                             "or as an 8- or 16-bit image")
    low, high = float(values.min()), float(values.max())
    if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
        raise ImageReadError(f"a float image with values in [{low:.4g}, {high:.4g}], but float images are read as "
                             "intensities in [0, 1]; rescale it to [0, 1] or save it as an 8- or 16-bit image")
    return values


def _gray_to_rgb(intensity: np.ndarray) -> Image.Image:
    """[0,1] intensities (H, W) as an 8-bit RGB image, rounded to the nearest level."""
    levels = np.rint(np.clip(intensity, 0.0, 1.0) * 255).astype(np.uint8)
    return Image.fromarray(levels).convert("RGB")


def _is_tiff(source: str | Path | BinaryIO) -> bool:
    try:
        if hasattr(source, "read"):
            source.seek(0)
            head = source.read(4)
        else:
            with open(source, "rb") as f:
                head = f.read(4)
    except (OSError, ValueError):
        return False
    return head in _TIFF_MAGIC
