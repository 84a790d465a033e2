"""Decoding original image files (PNG, JPEG, DICOM) into 2-D arrays, with clear errors.

Errors are :class:`ImageLoadError` (a corrupt or unreadable file) or FileNotFoundError (a
missing file); :mod:`cxrlab.data.prepare` counts and lists both instead of stopping.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrlab.errors import CxrlabError, MissingInputError


class ImageLoadError(CxrlabError, RuntimeError):
    """A file exists but cannot be decoded as an image."""


def _require(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"image file {path} is missing")
    return path


def load_raster(path, draft_size: int | None = None) -> np.ndarray:
    """A PNG/JPEG as a 2-D array (uint8, or uint16 for 16-bit PNGs).

    ``draft_size``: for JPEGs, let libjpeg decode at a reduced scale (1/2, 1/4, 1/8) that still
    leaves both sides at least ``draft_size`` px: 4-16x faster for 3000 px MIMIC/CheXpert
    files, and the DCT-domain reduction is itself antialiased.
    """
    path = _require(path)
    try:
        with Image.open(path) as im:
            if draft_size and im.format == "JPEG":
                im.draft("L", (draft_size, draft_size))
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.int32 if im.mode == "I" else None)
                if arr.dtype != np.uint16:
                    arr = arr.astype(np.int64)
                    arr = np.clip(arr, 0, 65535).astype(np.uint16) if arr.min() >= 0 else arr
                return arr
            if im.mode != "L":
                im = im.convert("L")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(f"cannot decode {path}: {e}") from None
    if arr.ndim != 2 or arr.size == 0:
        raise ImageLoadError(f"{path} decoded to shape {arr.shape}, not a 2-D image")
    return arr


def load_dicom(path) -> np.ndarray:
    """A DICOM radiograph as a 2-D array in display orientation (bright = dense).

    Applies the modality LUT (RescaleSlope / RescaleIntercept) and inverts MONOCHROME1 images.
    8-bit images without a rescale are returned as uint8 (SIIM's are), deeper ones as float32;
    :func:`cxrlab.data.resize.to_uint8` windows those.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = _require(path)
    try:
        with warnings.catch_warnings():  # malformed headers warn, then fail below if fatal
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            arr = ds.pixel_array
    except (InvalidDicomError, AttributeError, ValueError, KeyError, TypeError, OSError,
            EOFError, NotImplementedError, RuntimeError) as e:
        raise ImageLoadError(f"cannot decode DICOM {path}: {type(e).__name__}: {e}") from None
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim != 2 or arr.size == 0:
        raise ImageLoadError(f"DICOM {path} holds pixel data of shape {arr.shape}, "
                             "not one 2-D image")
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    mono1 = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1"
    if arr.dtype == np.uint8 and slope == 1 and intercept == 0:
        return (255 - arr) if mono1 else arr
    out = arr.astype(np.float32) * slope + intercept
    if mono1:
        out = out.max() + out.min() - out
    return out


def dicom_header(path) -> dict:
    """Patient and view fields of a DICOM header (pixels not read): PatientID, PatientAge,
    PatientSex, ViewPosition, Rows, Columns. Missing fields are None."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(_require(path), stop_before_pixels=True)
    out = {}
    for key in ("PatientID", "PatientAge", "PatientSex", "ViewPosition", "Rows", "Columns"):
        v = getattr(ds, key, None)
        if v is None or v == "":
            out[key] = None
        else:
            out[key] = int(v) if key in ("Rows", "Columns") else str(v)
    return out
