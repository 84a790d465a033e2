"""Tiny copies of each official layout, written from rows you give: real PNG, JPEG, DICOM and
(gzipped) CSV files, a few pixels big.

They exist so that the readers and ``cxrlab data prepare`` can be exercised end to end with no
download (the tests and ``cxrlab bench`` use them), and they double as executable
documentation of what each downloaded data set looks like on disk. Every writer takes the rows
explicitly, so the caller knows the truth it later checks against. A row's ``file`` key
(``"ok"`` default, ``"missing"``, ``"corrupt"``) makes an image absent or undecodable.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image


def toy_image(seed: int, height: int = 64, width: int = 64, bits: int = 8) -> np.ndarray:
    """A smooth, non-constant radiograph-like image (vertical + horizontal gradients, noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = 0.4 + 0.3 * np.sin(x / max(width, 1) * np.pi) + 0.2 * y / max(height, 1)
    img += 0.05 * rng.standard_normal((height, width)).astype(np.float32)
    img = np.clip(img, 0, 1)
    top = 255 if bits == 8 else 4095
    return np.rint(img * top).astype(np.uint8 if bits == 8 else np.uint16)


def write_raster(path: Path, image: np.ndarray, state: str = "ok") -> None:
    """A PNG or JPEG (by suffix); ``state="corrupt"``: garbage bytes, ``"missing"``: no file."""
    path = Path(path)
    if state == "missing":
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if state == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image" if path.suffix == ".png"
                         else b"\xff\xd8\xff garbage")
        return
    if state != "ok":
        raise ValueError(f"unknown file state {state!r}; use ok, missing or corrupt")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        Image.fromarray(image).save(path, quality=95)
    else:
        Image.fromarray(image).save(path)


def write_dicom(path: Path, image: np.ndarray, *, patient_id: str = "p0",
                age: str | None = "045Y",
                sex: str | None = "M", view: str | None = "PA", photometric: str = "MONOCHROME2",
                slope: float | None = None, intercept: float | None = None,
                state: str = "ok") -> None:
    """A minimal valid DICOM (CR, explicit VR little endian) holding ``image`` (uint8/uint16)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    if state == "missing":
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if state == "corrupt":
        path.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00 broken")
        return
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientID = patient_id
    if age is not None:
        ds.PatientAge = age
    if sex is not None:
        ds.PatientSex = sex
    if view is not None:
        ds.ViewPosition = view
    img = np.ascontiguousarray(image)
    ds.Rows, ds.Columns = img.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = 8 if img.dtype == np.uint8 else 16
    ds.BitsAllocated = bits
    ds.BitsStored = bits if bits == 8 else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    ds.PixelData = img.tobytes()
    if _pydicom_v3():
        ds.save_as(path, enforce_file_format=True)
    else:  # pydicom 2.x wants the encoding on the dataset itself
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(path, ds, write_like_original=False)


def _pydicom_v3() -> bool:
    import pydicom

    return int(pydicom.__version__.split(".")[0]) >= 3


# ----------------------------------------------------------------------------- NIH
def nih_tree(root, rows: Sequence[dict], size: tuple[int, int] = (64, 64),
             kaggle_layout: bool = False) -> Path:
    """NIH ChestX-ray14: ``Data_Entry_2017_v2020.csv``, ``train_val_list.txt``,
    ``test_list.txt``, ``images/*.png`` (or Kaggle's ``images_001/images/``).

    Row keys: ``image`` ("00000001_000.png"), ``findings`` ("Effusion|Mass" or "No Finding"),
    ``patient`` (int), ``age``, ``sex``, ``view``, ``list`` ("train_val", "test" or None =
    in neither list), ``file``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / ("images_001/images" if kaggle_layout else "images")
    recs = []
    for k, r in enumerate(rows):
        recs.append({"Image Index": r["image"], "Finding Labels": r.get("findings", "No Finding"),
                     "Follow-up #": k, "Patient ID": r["patient"],
                     "Patient Age": r.get("age", 50), "Patient Gender": r.get("sex", "M"),
                     "View Position": r.get("view", "PA"),
                     "OriginalImage[Width": size[1], "Height]": size[0],
                     "OriginalImagePixelSpacing[x": 0.143, "y]": 0.143})
        write_raster(folder / r["image"], toy_image(k, *size), r.get("file", "ok"))
    pd.DataFrame(recs).to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    for name, key in (("train_val_list.txt", "train_val"), ("test_list.txt", "test")):
        names = [r["image"] for r in rows if r.get("list", "train_val") == key]
        (root / name).write_text("".join(f"{n}\n" for n in names))
    return root


# ----------------------------------------------------------------------------- CheXpert
CHEXPERT_RAW = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity",
                "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
                "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices")


def chexpert_tree(root, train: Sequence[dict], valid: Sequence[dict],
                  folder: str = "CheXpert-v1.0-small", size: tuple[int, int] = (80, 64)) -> Path:
    """CheXpert: ``<folder>/train.csv``, ``valid.csv`` and
    ``<folder>/{train,valid}/patientNNNNN/studyK/viewJ_{frontal,lateral}.jpg``.

    Row keys: ``patient`` (int), ``study`` (int, default 1), ``view`` (int, default 1),
    ``lateral`` (bool), ``ap_pa`` ("AP"/"PA"), ``sex`` ("Female"/"Male"), ``age``,
    ``labels`` ({raw column name: 1 / 0 / -1}; others blank), ``file``.
    """
    root = Path(root)
    for split, rows in (("train", train), ("valid", valid)):
        recs = []
        for k, r in enumerate(rows):
            kind = "lateral" if r.get("lateral") else "frontal"
            rel = (f"{folder}/{split}/patient{r['patient']:05d}/study{r.get('study', 1)}/"
                   f"view{r.get('view', 1)}_{kind}.jpg")
            rec = {"Path": rel, "Sex": r.get("sex", "Female"), "Age": r.get("age", 60),
                   "Frontal/Lateral": kind.capitalize(),
                   "AP/PA": "" if kind == "lateral" else r.get("ap_pa", "AP")}
            for c in CHEXPERT_RAW:
                v = r.get("labels", {}).get(c)
                rec[c] = "" if v is None else float(v)
            recs.append(rec)
            write_raster(root / rel, toy_image(100 + k + (500 if split == "valid" else 0), *size),
                         r.get("file", "ok"))
        (root / folder).mkdir(parents=True, exist_ok=True)
        pd.DataFrame(recs, columns=["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA",
                                    *CHEXPERT_RAW]).to_csv(root / folder / f"{split}.csv",
                                                           index=False)
    return root


# ----------------------------------------------------------------------------- MIMIC
def mimic_tree(root, images: Sequence[dict], studies: Sequence[dict],
               patients: Sequence[dict] | None = None, size: tuple[int, int] = (72, 64)) -> Path:
    """MIMIC-CXR-JPG: the three gzipped tables and ``files/pXX/p<subject>/s<study>/<dicom>.jpg``.

    ``images`` keys: ``dicom_id``, ``subject_id``, ``study_id``, ``split``
    (train/validate/test), ``view`` (ViewPosition), ``file``. ``studies`` keys: ``subject_id``,
    ``study_id``, ``labels`` ({raw name: 1/0/-1}). ``patients`` (optional MIMIC-IV
    ``patients.csv.gz``): ``subject_id``, ``gender``, ``anchor_age``.
    """
    from cxrlab.data.readers.mimic import image_path

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{k: r[k] for k in ("dicom_id", "study_id", "subject_id", "split")}
                  for r in images]).to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    pd.DataFrame([{"dicom_id": r["dicom_id"], "subject_id": r["subject_id"],
                   "study_id": r["study_id"], "PerformedProcedureStepDescription": "CHEST",
                   "ViewPosition": r.get("view", "PA"), "Rows": size[0], "Columns": size[1]}
                  for r in images]).to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    recs = []
    for s in studies:
        rec = {"subject_id": s["subject_id"], "study_id": s["study_id"]}
        for c in CHEXPERT_RAW:
            v = s.get("labels", {}).get(c)
            rec[c] = np.nan if v is None else float(v)
        recs.append(rec)
    pd.DataFrame(recs, columns=["subject_id", "study_id", *CHEXPERT_RAW]).to_csv(
        root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    if patients is not None:
        pd.DataFrame(list(patients)).to_csv(root / "patients.csv.gz", index=False)
    for k, r in enumerate(images):
        write_raster(root / image_path(r["subject_id"], r["study_id"], r["dicom_id"]),
                     toy_image(200 + k, *size), r.get("file", "ok"))
    return root


# ----------------------------------------------------------------------------- SIIM
def siim_tree(root, images: Sequence[dict], size: int = 64, gzip: bool = False) -> Path:
    """SIIM-ACR: ``train-rle.csv`` (``ImageId, EncodedPixels`` with the competition's leading
    space in the second header) and ``dicom-images-train/<study>/<series>/<ImageId>.dcm``.

    ``images`` keys: ``image_id``, ``rles`` (list of run-length strings; empty = negative, one
    ``-1`` row), ``patient_id``, ``age``, ``sex``, ``view``, ``photometric``, ``file``,
    ``pixels`` (an explicit image array, else a toy image).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lines = ["ImageId, EncodedPixels"]
    for k, r in enumerate(images):
        for rle in (r.get("rles") or ["-1"]):
            lines.append(f"{r['image_id']}, {rle}")
        pix = r.get("pixels")
        if pix is None:
            pix = toy_image(300 + k, size, size)
        folder = root / "dicom-images-train" / f"1.2.3.{k}" / f"1.2.3.{k}.1"
        write_dicom(folder / f"{r['image_id']}.dcm", pix,
                    patient_id=r.get("patient_id", r["image_id"]), age=r.get("age", "045Y"),
                    sex=r.get("sex", "M"), view=r.get("view", "PA"),
                    photometric=r.get("photometric", "MONOCHROME2"), state=r.get("file", "ok"))
    text = "\n".join(lines) + "\n"
    if gzip:
        import gzip as gz

        with gz.open(root / "train-rle.csv.gz", "wt") as f:
            f.write(text)
    else:
        (root / "train-rle.csv").write_text(text)
    return root


# ----------------------------------------------------------------------------- PadChest
def padchest_tree(root, rows: Sequence[dict], size: tuple[int, int] = (64, 56),
                  gzip: bool = True) -> Path:
    """PadChest: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz`` and 16-bit PNGs in
    ``<ImageDir>/<ImageID>``.

    Row keys: ``image_id`` ("x.png"), ``patient_id``, ``folder`` (ImageDir, default 0),
    ``labels`` (list of PadChest terms, None = no list), ``projection`` ("PA", "L",
    "AP_horizontal", ...), ``birth`` (year), ``study_date`` (YYYYMMDD), ``sex``, ``file``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    recs = []
    for k, r in enumerate(rows):
        labels = r.get("labels", ["normal"])
        recs.append({"ImageID": r["image_id"], "ImageDir": r.get("folder", 0),
                     "StudyDate_DICOM": r.get("study_date", 20150914), "StudyID": f"s{k}",
                     "PatientID": r["patient_id"], "PatientBirth": r.get("birth", 1950.0),
                     "PatientSex_DICOM": r.get("sex", "F"), "Projection": r.get("projection", "PA"),
                     "MethodLabel": r.get("method", "Physician"),
                     "Labels": None if labels is None else repr(list(labels))})
        write_raster(root / str(r.get("folder", 0)) / r["image_id"],
                     toy_image(400 + k, *size, bits=12), r.get("file", "ok"))
    name = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv" + (".gz" if gzip else "")
    pd.DataFrame(recs).to_csv(root / name)  # the official file has an unnamed index column
    return root
