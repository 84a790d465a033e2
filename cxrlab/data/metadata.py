"""Real metadata with no download: the tables that torchxrayvision ships inside its wheel.

The PyPI package ``torchxrayvision`` carries, in its ``data/`` folder, the full NIH
``Data_Entry_2017_v2020.csv.gz`` (112,120 images, 30,805 patients), CheXpert's
``chexpert_train.csv.gz`` (223,414 images) and PadChest's label table (160,861 images, Spain),
among others. No images, but enough to *see* the
label and demographic shift between two real hospitals on any laptop.

:func:`load_shipped_metadata` parses them with the very same functions as the NIH and
CheXpert / PadChest readers (:func:`cxrlab.data.readers.nih.parse_data_entry`,
:func:`cxrlab.data.readers.chexpert.parse_table`,
:func:`cxrlab.data.readers.padchest.parse_table`), so the result has the shape of a cache
manifest. Two differences from a prepared cache, both because the shipped tables are partial:

* **Splits are stand-ins.** NIH's ``train_val_list.txt`` / ``test_list.txt`` and CheXpert's
  ``valid.csv`` are not shipped (PadChest has no official split), so ``split`` is a seeded
  patient-wise hash (70 / 10 / 20 %). Do not compare results on these splits with published
  ones.
* **No images**: ``path`` is the path the image would have in the official layout.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from cxrlab.errors import MissingInputError, UnknownNameError

#: name -> file in torchxrayvision's data folder
SHIPPED_FILES = {
    "nih": "Data_Entry_2017_v2020.csv.gz",
    "chexpert": "chexpert_train.csv.gz",
    "siim": "siim-pneumothorax-train-rle.csv.gz",
    "nih_bbox": "BBox_List_2017.csv.gz",
    "padchest": "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
}
MANIFEST_NAMES = ("nih", "chexpert", "padchest")


def _xrv_data_folder() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "torchxrayvision is not installed, and its wheel is where the shipped NIH/CheXpert "
            "metadata lives; install it with `pip install torchxrayvision` (it is in the course "
            "requirements: `make install`)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def shipped_metadata_path(name: str) -> Path:
    """Path of one of torchxrayvision's shipped tables (see :data:`SHIPPED_FILES`)."""
    if name not in SHIPPED_FILES:
        raise UnknownNameError(f"no shipped table {name!r}; choose one of {list(SHIPPED_FILES)}")
    path = _xrv_data_folder() / SHIPPED_FILES[name]
    if not path.is_file():
        raise MissingInputError(f"{path} is missing from the installed torchxrayvision; "
                                "reinstall it (`pip install --force-reinstall torchxrayvision`)")
    return path


@functools.lru_cache(maxsize=8)
def _load(name: str, uncertain, blank: str, frontal_only: bool, seed: int) -> pd.DataFrame:
    from cxrlab.data.readers import chexpert, nih, padchest
    from cxrlab.data.readers._base import finish_manifest, patient_split, read_table

    path = shipped_metadata_path(name)
    if name == "nih":
        df = nih.parse_data_entry(read_table(path, nih.TABLE_COLUMNS, "nih"))
        df["path"] = "images/" + df["image_id"]
    elif name == "padchest":
        df = padchest.parse_table(padchest.read_padchest_table(path), frontal_only=frontal_only)
    else:
        df = chexpert.parse_table(read_table(path, chexpert.TABLE_COLUMNS, "chexpert"),
                                  uncertain=uncertain, blank=blank, frontal_only=frontal_only)
    df["split"] = patient_split(df["patient_id"], val_fraction=0.1, test_fraction=0.2, seed=seed)
    return finish_manifest(df, name)


def load_shipped_metadata(name: str, *, uncertain: str = "ignore", blank: str = "zeros",
                          frontal_only: bool = True, seed: int = 0) -> pd.DataFrame:
    """The real NIH (``"nih"``), CheXpert (``"chexpert"``) or PadChest (``"padchest"``)
    metadata as a manifest-shaped DataFrame (no images). ``uncertain`` / ``blank`` apply to
    CheXpert as in :func:`cxrlab.data.readers.chexpert.read_manifest`; ``frontal_only`` to
    CheXpert and PadChest; NIH keeps all views and images.

    >>> nih = load_shipped_metadata("nih"); len(nih)
    112120
    """
    if name not in MANIFEST_NAMES:
        raise UnknownNameError(f"load_shipped_metadata reads {list(MANIFEST_NAMES)}, not {name!r} "
                       "(use shipped_metadata_path for the other tables)")
    return _load(name, uncertain, blank, bool(frontal_only), int(seed)).copy()
