"""The synthetic hospitals: one :class:`HospitalSpec` per site, all in one table.

Every difference between two hospitals is a field of this table, so the course can point at
the exact cause of each shift:

* **population**: age, sex, view (PA vs portable AP), follow-ups per patient, and label
  prevalence (``prevalence_factor`` reweights the real NIH label combinations, see
  :mod:`.labels_prior`);
* **acquisition**: the display curve (``contrast`` gain, ``window`` centre, ``gamma``),
  exposure (systematic ``exposure`` offset and per-image ``exposure_sd``), ``noise``, detector
  ``blur``, internal ``resolution`` (rendered smaller, then upsampled), ``collimation`` borders,
  burned-in laterality ``marker`` and ``text``;
* **label definition** (``borderline``): a finding whose severity is below the threshold is
  *labelled negative* here although it is drawn; elsewhere it would be called positive;
* **shortcut** (only with ``shortcut=True``): a chest drain outside the lungs appears with
  probability ``shortcut_pos`` in images positive for ``shortcut_label`` and ``shortcut_neg``
  in the others. At the source the two differ (a shortcut); at targets they are equal.

:func:`hospital_table` gives the table as a DataFrame, :func:`hospital_table_markdown` as the
Markdown table in ``docs/synthetic_hospitals.md`` (a test keeps the two in sync).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field, fields

import pandas as pd

from cxrlab.errors import UnknownNameError, UsageError
from cxrlab.labels import NIH14

#: Severity (0..1) from which every hospital calls a finding positive; a hospital's
#: ``borderline`` thresholds can only be higher.
MIN_SEVERITY = 0.15


@dataclass(frozen=True)
class HospitalSpec:
    """Parameters of one synthetic hospital (see the module docstring for their meaning)."""

    name: str
    description: str
    # --- population
    age_mean: float
    age_sd: float
    p_male: float
    p_ap: float
    images_per_patient: float
    prevalence_factor: dict = field(default_factory=dict)
    no_finding_factor: float = 1.0
    # --- acquisition
    contrast: float = 4.5        # gain of the sigmoid display curve
    window: float = 0.55         # attenuation mapped to mid-grey
    gamma: float = 1.0           # power applied after the curve (>1 darker mid-tones)
    exposure: float = 0.0        # systematic attenuation offset (+ = under-exposed, brighter)
    exposure_sd: float = 0.03    # per-image jitter of that offset
    noise: float = 0.02          # quantum noise s.d. (attenuation units)
    blur: float = 0.002          # detector blur s.d. as a fraction of the image width
    resolution: float = 1.0      # internal render size / output size (<1: upsampled, blocky)
    collimation: float = 0.02    # largest collimator border per side, fraction of the width
    collimation_value: int = 255  # grey level of the collimated border (255 white, 0 black)
    marker: str = "R"            # laterality marker letter ("" for none)
    marker_corner: str = "tl"    # tl, tr, bl, br
    text: str = ""               # burned-in text ("" for none)
    text_corner: str = "br"
    # --- label definition: finding -> severity below which it is labelled negative
    borderline: dict = field(default_factory=dict)
    borderline_rate: float = 0.0  # share of negatives that show such a sub-threshold finding
    # --- shortcut (active only when generating with shortcut=True)
    shortcut_label: str = "Pneumothorax"
    shortcut_pos: float = 0.05
    shortcut_neg: float = 0.05

    def __post_init__(self):
        for table in (self.prevalence_factor, self.borderline):
            unknown = sorted(set(table) - set(NIH14))
            if unknown:
                raise UnknownNameError(f"hospital {self.name!r}: unknown label name(s) {unknown}; "
                               f"known labels are {list(NIH14)}")
        if self.shortcut_label not in NIH14:
            raise UnknownNameError(f"hospital {self.name!r}: unknown shortcut label "
                           f"{self.shortcut_label!r}; known labels are {list(NIH14)}")
        for name, t in self.borderline.items():
            if not MIN_SEVERITY <= t < 1:
                raise UsageError(f"hospital {self.name!r}: borderline threshold for {name} must "
                                 f"be in [{MIN_SEVERITY}, 1), got {t}")
        if not 0 < self.resolution <= 1:
            raise UsageError(f"hospital {self.name!r}: resolution must be in (0, 1]")
        for corner in (self.marker_corner, self.text_corner):
            if corner not in ("tl", "tr", "bl", "br"):
                raise UsageError(f"hospital {self.name!r}: corner must be tl/tr/bl/br, got {corner!r}")

    @property
    def key(self) -> int:
        """A stable number for the name (seeds depend on it, not on the table's order)."""
        return zlib.crc32(self.name.encode())

    def threshold(self, label: str) -> float:
        """Severity from which this hospital labels ``label`` positive."""
        return float(self.borderline.get(label, MIN_SEVERITY))


HOSPITALS: dict[str, HospitalSpec] = {
    spec.name: spec for spec in (
        HospitalSpec(
            name="source",
            description="training hospital, MIMIC-like: academic centre with ICU, mixed PA/AP",
            age_mean=60.0, age_sd=17.0, p_male=0.53, p_ap=0.45, images_per_patient=3.0,
            prevalence_factor={"Cardiomegaly": 3.0, "Edema": 3.0, "Effusion": 1.8,
                               "Atelectasis": 1.5, "Pneumothorax": 1.5, "Infiltration": 0.6},
            contrast=4.6, window=0.55, gamma=1.0, exposure=0.0, exposure_sd=0.03,
            noise=0.02, blur=0.002, resolution=1.0, collimation=0.02, collimation_value=255,
            marker="R", marker_corner="tl", text="",
            shortcut_label="Pneumothorax", shortcut_pos=0.90, shortcut_neg=0.05,
        ),
        HospitalSpec(
            name="target_nih",
            description="NIH-like target: outpatient clinical centre, younger, NIH prevalence",
            age_mean=47.0, age_sd=16.6, p_male=0.56, p_ap=0.40, images_per_patient=3.6,
            prevalence_factor={},
            contrast=6.5, window=0.62, gamma=1.25, exposure=-0.05, exposure_sd=0.04,
            noise=0.015, blur=0.003, resolution=1.0, collimation=0.05, collimation_value=0,
            marker="L", marker_corner="tr", text="",
            shortcut_pos=0.05, shortcut_neg=0.05,
        ),
        HospitalSpec(
            name="target_old",
            description="older population, portable AP on old plates; calls small effusions "
                        "and borderline hearts negative",
            age_mean=76.0, age_sd=8.0, p_male=0.45, p_ap=0.90, images_per_patient=2.0,
            prevalence_factor={"Cardiomegaly": 2.5, "Effusion": 2.0, "Emphysema": 2.0,
                               "Fibrosis": 2.0, "Hernia": 3.0, "Pneumothorax": 0.7},
            contrast=3.2, window=0.50, gamma=0.85, exposure=0.08, exposure_sd=0.08,
            noise=0.045, blur=0.006, resolution=1.0, collimation=0.10, collimation_value=255,
            marker="L", marker_corner="tl", text="AP PORT", text_corner="tr",
            borderline={"Cardiomegaly": 0.45, "Effusion": 0.45}, borderline_rate=0.35,
            shortcut_pos=0.05, shortcut_neg=0.05,
        ),
        HospitalSpec(
            name="target_lowres",
            description="low-resolution, noisy teleradiology uploads from a young community "
                        "clinic with much pneumonia",
            age_mean=38.0, age_sd=14.0, p_male=0.60, p_ap=0.20, images_per_patient=1.5,
            prevalence_factor={"Pneumonia": 4.0, "Consolidation": 2.0, "Infiltration": 1.5,
                               "Cardiomegaly": 0.7},
            contrast=5.0, window=0.45, gamma=1.1, exposure=-0.10, exposure_sd=0.06,
            noise=0.07, blur=0.004, resolution=0.5, collimation=0.04, collimation_value=0,
            marker="R", marker_corner="bl", text="1024", text_corner="br",
            shortcut_pos=0.05, shortcut_neg=0.05,
        ),
    )
}

#: The hospital the course trains on; every other one is a target.
SOURCE = "source"


def get_hospital(name: str | HospitalSpec) -> HospitalSpec:
    """Look a hospital up by name (a :class:`HospitalSpec` passes through)."""
    if isinstance(name, HospitalSpec):
        return name
    try:
        return HOSPITALS[name]
    except (KeyError, TypeError):
        raise UnknownNameError(f"unknown hospital {name!r}; known hospitals are {list(HOSPITALS)}") from None


def hospital_table(hospitals=None) -> pd.DataFrame:
    """Every hospital's parameters: one row per parameter, one column per hospital.

    The ``shortcut_*`` rows take effect only when data are generated with ``shortcut=True``.
    """
    specs = [get_hospital(h) for h in (hospitals or HOSPITALS)]
    rows = {}
    for f in fields(HospitalSpec):
        if f.name == "name":
            continue
        rows[f.name] = [getattr(s, f.name) for s in specs]
    return pd.DataFrame(rows, index=[s.name for s in specs]).T.rename_axis("parameter")


def hospital_table_markdown(hospitals=None) -> str:
    """:func:`hospital_table` as a Markdown table (what the docs show)."""
    table = hospital_table(hospitals)
    cols = list(table.columns)
    lines = ["| parameter | " + " | ".join(f"`{c}`" for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for param, row in table.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, dict):
                v = ", ".join(f"{k}: {x:g}" for k, x in v.items()) or "-"
            elif isinstance(v, float):
                v = f"{v:g}"
            elif v == "":
                v = "-"
            cells.append(str(v).replace("|", "/"))
        lines.append(f"| {param} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


DOCS_START, DOCS_END = "<!-- hospital-table:start -->\n", "<!-- hospital-table:end -->"


def update_docs(path=None) -> bool:
    """Rewrite the hospital table in ``docs/synthetic_hospitals.md`` from the code.

    Returns True when the file changed. Run ``python -m cxrlab.data.synthetic``.
    """
    from pathlib import Path

    path = Path(path) if path else Path(__file__).resolve().parents[3] / "docs" / "synthetic_hospitals.md"
    text = path.read_text()
    if DOCS_START not in text or DOCS_END not in text:
        raise UsageError(f"{path} lacks the markers {DOCS_START.strip()} ... {DOCS_END}")
    head, rest = text.split(DOCS_START, 1)
    _, tail = rest.split(DOCS_END, 1)
    new = head + DOCS_START + hospital_table_markdown() + DOCS_END + tail
    if new != text:
        path.write_text(new)
    return new != text
