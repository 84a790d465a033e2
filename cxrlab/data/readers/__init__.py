"""Readers for the real chest X-ray data sets, one module per data set.

Each reader module exposes

* ``NAME`` (the data set key), ``HAS_LESION_MASKS`` (bool),
* ``read_manifest(root, **options) -> DataFrame``: one row per image, in the shape of a cache
  manifest (``image_id, patient_id, split, domain, age, sex, view, path`` with ``path``
  relative to ``root``, and one float column per canonical label, NaN where the data set does
  not define the label), patient-level splits already checked;
* ``load_image(root, row, size_hint=None) -> np.ndarray`` (2-D, uint8 or deeper; the cache
  windowing in :mod:`cxrlab.data.resize` makes it uint8);
* for data sets with masks, ``load_masks(root, row, shape) -> np.ndarray`` (uint8 0/1).

>>> from cxrlab.data.readers import get_reader
>>> m = get_reader("nih").read_manifest("/data/nih", views="PA")

The reader choices (views, splits, uncertain labels) are documented in each module and in
``docs/real_data.md``.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from cxrlab.errors import UnknownNameError

#: data set key -> module implementing it
READERS = {
    "nih": "cxrlab.data.readers.nih",
    "chexpert": "cxrlab.data.readers.chexpert",
    "mimic": "cxrlab.data.readers.mimic",
    "siim": "cxrlab.data.readers.siim",
    "padchest": "cxrlab.data.readers.padchest",
}


def list_readers() -> list[str]:
    return list(READERS)


def get_reader(name: str) -> ModuleType:
    """The reader module of a data set (``"nih"``, ``"chexpert"``, ``"mimic"``, ``"siim"``...)."""
    key = str(name).lower()
    if key not in READERS:
        raise UnknownNameError(f"no reader for data set {name!r}; choose one of {list(READERS)}")
    return importlib.import_module(READERS[key])
