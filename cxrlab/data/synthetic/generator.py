"""``generate``: images, masks, labels and metadata of one synthetic hospital.

How a batch is made (all of it vectorised over the batch, in float32):

1. **who** (:func:`_draw_block`): patients with several follow-up images (sex, age and
   body habitus shared), a view per image, a label vector per image sampled from the real
   NIH label combinations reweighted to the hospital's prevalence (follow-ups keep their
   predecessor's findings half of the time), a severity and a few random numbers per finding,
   the borderline findings this hospital labels negative, and the shortcut marker;
2. **anatomy** (:mod:`.anatomy`), edited by the shape-changing findings;
3. **findings** (:mod:`.findings`), each drawn only into the images that have it;
4. **acquisition** (:mod:`.acquisition`): resolution, blur, exposure, noise, display curve,
   collimation, burned-in text and laterality marker.

Randomness is keyed, never shared: images come in blocks of :data:`BLOCK`, and block ``b``
of hospital ``h`` draws everything from ``SeedSequence(seed, spawn_key=(key(h), b))``. So the
same arguments give byte-identical arrays, writing a cache in chunks of any size gives the
same cache, the first ``n`` images of a larger request are the same images, and the same seed
at 64 px and at 224 px shows the same patients with the same findings.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlab.labels import NIH14

from . import acquisition as acq
from .anatomy import F32, body_attenuation, draw_anatomy, lung_geometry
from .findings import FINDINGS, N_RANDOM, Context, adjust_anatomy
from .hospitals import MIN_SEVERITY, HospitalSpec, get_hospital
from .labels_prior import load_label_prior

#: Bumped whenever the same seed would draw different images (caches record it in meta.json).
GENERATOR_VERSION = 2
#: Images per random block (the unit of determinism; patients never span two blocks).
BLOCK = 256
#: Smallest image size the generator draws (the anatomy needs a few pixels per rib).
MIN_SIZE = 32
#: Share of a hospital's patients in each split (patient level, deterministic).
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
#: Probability that a follow-up image keeps the findings of the patient's previous image.
FOLLOWUP_KEEP = 0.5

META_COLUMNS = ("image_id", "patient_id", "age", "sex", "view", "domain", "split",
                "followup", "shortcut_marker", "ctr")


@dataclass
class SynthBatch:
    """Images of one hospital (row i of every array describes image i).

    ``images`` uint8 [n, S, S]; ``lung_masks`` uint8 [n, S, S] (1 inside either lung);
    ``lesion_masks`` uint16 [n, S, S] (bit k = NIH14 label k, see
    :func:`cxrlab.labels.lesion_mask_for`); ``labels`` float32 [n, 14] (NIH14 order, 0/1, as
    *this hospital* labels them); ``severity`` float32 [n, 14] (0 where nothing is drawn;
    a finding drawn but labelled negative is a borderline case); ``meta`` DataFrame with
    ``image_id, patient_id, age, sex, view, domain, split, followup, shortcut_marker, ctr``.
    """

    images: np.ndarray
    lung_masks: np.ndarray
    lesion_masks: np.ndarray
    labels: np.ndarray
    severity: np.ndarray
    meta: pd.DataFrame

    def __len__(self) -> int:
        return len(self.images)

    @property
    def label_names(self) -> tuple[str, ...]:
        return NIH14

    def label_frame(self) -> pd.DataFrame:
        """The labels as a DataFrame with one column per NIH14 label."""
        return pd.DataFrame(self.labels, columns=list(NIH14))

    @staticmethod
    def concat(batches: Sequence["SynthBatch"]) -> "SynthBatch":
        if len(batches) == 1:
            return batches[0]
        return SynthBatch(
            images=np.concatenate([b.images for b in batches]),
            lung_masks=np.concatenate([b.lung_masks for b in batches]),
            lesion_masks=np.concatenate([b.lesion_masks for b in batches]),
            labels=np.concatenate([b.labels for b in batches]),
            severity=np.concatenate([b.severity for b in batches]),
            meta=pd.concat([b.meta for b in batches], ignore_index=True),
        )


def resolve_hospital(hospital: str | HospitalSpec, *, shortcut_label: str | None = None,
                     prevalence_factor: Mapping[str, float] | None = None) -> HospitalSpec:
    """The hospital's spec with optional overrides (checked: unknown labels raise KeyError).

    ``prevalence_factor`` multiplies the hospital's own prevalence factors, label by label
    (2.0 doubles the label's weight in the NIH prior; it does not set a rate).
    """
    spec = get_hospital(hospital)
    changes = {}
    if shortcut_label is not None:
        changes["shortcut_label"] = shortcut_label
    if prevalence_factor:
        unknown = sorted(set(prevalence_factor) - set(NIH14))
        if unknown:
            raise KeyError(f"unknown label name(s) {unknown} in prevalence_factor; "
                           f"known labels are {list(NIH14)}")
        factors = dict(spec.prevalence_factor)
        for k, f in prevalence_factor.items():
            factors[k] = factors.get(k, 1.0) * float(f)
        changes["prevalence_factor"] = factors
    return dataclasses.replace(spec, **changes) if changes else spec


def check_request(n: int, image_size: int, seed: int) -> None:
    """Refuse impossible requests with a message that says what to pass instead."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"number of images must be an integer, got {n!r}")
    if n < 0:
        raise ValueError(f"number of images must be >= 0, got {n}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise TypeError(f"image size must be an integer number of pixels, got {image_size!r}")
    if image_size < MIN_SIZE:
        raise ValueError(f"image size must be at least {MIN_SIZE} px (the anatomy needs it), "
                         f"got {image_size}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def generate(hospital: str | HospitalSpec, n: int, image_size: int = 64, seed: int = 0,
             shortcut: bool = False, patient_offset: int = 0, *,
             shortcut_label: str | None = None,
             prevalence_factor: Mapping[str, float] | None = None) -> SynthBatch:
    """Draw ``n`` images of ``hospital`` (a name from :data:`HOSPITALS` or a spec).

    ``shortcut=True`` burns in the hospital's shortcut marker (a chest drain outside the
    lungs) with its label-dependent rates; ``shortcut_label`` / ``prevalence_factor`` override the
    table for experiments. ``patient_offset`` shifts the patient numbers (to combine
    batches drawn with different seeds without id clashes).
    """
    spec = resolve_hospital(hospital, shortcut_label=shortcut_label, prevalence_factor=prevalence_factor)
    check_request(n, image_size, seed)
    parts = [render_block(spec, int(seed), b, min(BLOCK, n - b * BLOCK), int(image_size),
                          bool(shortcut), int(patient_offset))
             for b in range(-(-n // BLOCK))]
    if not parts:
        return _empty(int(image_size))
    return SynthBatch.concat(parts)


def _empty(size: int) -> SynthBatch:
    z = np.zeros((0, size, size), np.uint8)
    return SynthBatch(z, z.copy(), np.zeros((0, size, size), np.uint16),
                      np.zeros((0, 14), np.float32), np.zeros((0, 14), np.float32),
                      pd.DataFrame({c: [] for c in META_COLUMNS}))


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


def _draw_block(spec: HospitalSpec, seed: int, block: int, shortcut: bool) -> dict:
    """Every per-image number of one block of :data:`BLOCK` images (no pixels yet)."""
    rng = _rng(seed, spec.key, block)
    B = BLOCK
    # patients: 1 + geometric follow-ups; a patient never spans two blocks
    counts = rng.geometric(1.0 / max(spec.images_per_patient, 1.0), size=B)
    pat = np.repeat(np.arange(B), counts)[:B]
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    followup = np.arange(B) - starts[pat]
    first = followup == 0
    male_p = rng.random(B) < spec.p_male
    age_p = np.clip(rng.normal(spec.age_mean, spec.age_sd, B), 18, 92)
    habitus_p = rng.standard_normal((B, 3)).astype(F32)
    split_p = rng.random(B)
    # follow-ups are weeks to months apart: ages never decrease within a patient
    gaps = np.cumsum(np.where(first, 0.0, rng.uniform(0.0, 0.6, B)))
    age = np.round(np.minimum(age_p[pat] + gaps - gaps[starts[pat]], 95)).astype(np.int64)
    male = male_p[pat]
    ap = rng.random(B) < spec.p_ap
    # labels: real NIH combinations, reweighted; follow-ups may keep their findings
    prior = load_label_prior()
    fresh = prior.sample(rng, B, prior.weights(spec.prevalence_factor, spec.no_finding_factor))
    keep = (rng.random(B) < FOLLOWUP_KEEP) & ~first
    src = np.maximum.accumulate(np.where(keep, 0, np.arange(B)))
    labels = fresh[src]
    thr = np.array([spec.threshold(name) for name in NIH14], dtype=F32)
    sev_u = rng.random((B, 14)).astype(F32)
    border_u = rng.random((B, 14))
    border_sev = rng.random((B, 14)).astype(F32)
    r = rng.random((B, 14, N_RANDOM)).astype(F32)
    progress = rng.uniform(0.9, 1.1, (B, 14)).astype(F32)
    positive = labels > 0
    sev = np.where(positive, thr + (1 - thr) * sev_u[src], 0).astype(F32)
    sev = np.where(positive & ~first[:, None] & keep[:, None],
                   np.clip(sev * progress, thr, 1), sev).astype(F32)
    # borderline findings this hospital calls negative
    has_border = (thr > MIN_SEVERITY)[None, :] & ~positive & (border_u[src] < spec.borderline_rate)
    sev = np.where(has_border, MIN_SEVERITY + (thr - MIN_SEVERITY) * border_sev[src], sev)
    present = positive | has_border
    r = r[src]
    # anatomy, edited by the findings that change shape
    p = draw_anatomy(rng, B, male=male, age=age.astype(F32), ap=ap, habitus=habitus_p[pat])
    adjust_anatomy(p, present, sev, r)
    # acquisition, per image
    exposure = (spec.exposure + spec.exposure_sd * rng.standard_normal(B)).astype(F32)
    borders = rng.random((B, 4))
    marker_jitter = rng.random((B, 2))
    text_jitter = rng.random((B, 2))
    # shortcut: a chest drain, its rate depending on the label at this hospital
    k = NIH14.index(spec.shortcut_label)
    rate = np.where(labels[:, k] > 0, spec.shortcut_pos, spec.shortcut_neg)
    marker = (rng.random(B) < rate) & bool(shortcut)
    ptx = NIH14.index("Pneumothorax")
    drain_side = np.where(present[:, ptx], np.where(r[:, ptx, 0] < 0.5, -1.0, 1.0),
                          np.where(rng.random(B) < 0.5, -1.0, 1.0)).astype(F32)
    drain_start = rng.uniform(-0.25, 0.2, B).astype(F32)
    split = np.where(split_p < SPLIT_FRACTIONS["train"], "train",
                     np.where(split_p < SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["val"],
                              "val", "test"))
    return dict(pat=pat, followup=followup, male=male, age=age, ap=ap, labels=labels, sev=sev,
                present=present, r=r, p=p, exposure=exposure, borders=borders,
                marker_jitter=marker_jitter, text_jitter=text_jitter, marker=marker,
                drain_side=drain_side, drain_start=drain_start, split=split[pat])


def _take(d: dict, rows) -> dict:
    return {k: v[rows] for k, v in d.items()}


def _sub_batch(size: int) -> int:
    """Images rendered at once: about 256k pixels (1 MiB) per float array, small enough for
    the CPU caches to hold the working set (and part of the seeding: keep it fixed)."""
    return int(max(1, min(BLOCK, (1 << 18) // (size * size))))


def render_block(spec: HospitalSpec, seed: int, block: int, count: int, size: int,
                 shortcut: bool, patient_offset: int = 0) -> SynthBatch:
    """The first ``count`` images of block ``block`` (see the module docstring)."""
    d = _draw_block(spec, seed, block, shortcut)
    sub = _sub_batch(size)
    internal = max(16, int(round(size * spec.resolution)))
    images = np.empty((count, size, size), np.uint8)
    lungs = np.empty((count, size, size), np.uint8)
    lesions = np.empty((count, size, size), np.uint16)
    for j, lo in enumerate(range(0, count, sub)):
        rows = slice(lo, min(count, lo + sub))
        noise_rng = _rng(seed, spec.key, block, 1, j)
        images[rows], lungs[rows], lesions[rows] = _render(spec, d, rows, size, internal,
                                                           noise_rng)
    labels, severity, meta = _meta(spec, d, block, count, patient_offset)
    return SynthBatch(images=images, lung_masks=lungs, lesion_masks=lesions,
                      labels=labels, severity=severity, meta=meta)


def _meta(spec: HospitalSpec, d: dict, block: int, count: int, patient_offset: int):
    base = block * BLOCK
    pid = np.array([f"{spec.name}-p{patient_offset + base + q:06d}" for q in d["pat"][:count]],
                   dtype=object)
    meta = pd.DataFrame({
        "image_id": [f"{p}-{f:02d}" for p, f in zip(pid, d["followup"][:count])],
        "patient_id": pid,
        "age": d["age"][:count],
        "sex": np.where(d["male"][:count], "M", "F"),
        "view": np.where(d["ap"][:count], "AP", "PA"),
        "domain": spec.name,
        "split": d["split"][:count],
        "followup": d["followup"][:count],
        "shortcut_marker": d["marker"][:count].astype(np.int64),
        "ctr": np.round(d["p"]["ctr"][:count].astype(np.float64), 3),
    })
    return d["labels"][:count].astype(np.float32), d["sev"][:count].astype(np.float32), meta


def block_meta(spec: HospitalSpec, seed: int, block: int, count: int, shortcut: bool,
               patient_offset: int = 0):
    """Labels, severities and metadata of a block without drawing any pixel (cheap)."""
    return _meta(spec, _draw_block(spec, seed, block, shortcut), block, count, patient_offset)


def _render(spec: HospitalSpec, d: dict, rows: np.ndarray, size: int, internal: int,
            noise_rng: np.random.Generator):
    """Pixels of ``rows`` of a drawn block: (images uint8, lung masks uint8, lesions uint16)."""
    p = _take(d["p"], rows)
    geo = lung_geometry(p, internal)
    A, air, vessels = body_attenuation(p, geo)
    lesion = np.zeros(A.shape, np.uint16)
    present, sev, r = d["present"][rows], d["sev"][rows], d["r"][rows]
    px = (2.0 / (internal * p["sx"]))[:, None, None].astype(F32)
    for k, (name, fn) in enumerate(FINDINGS.items()):
        idx = np.flatnonzero(present[:, k])
        if not len(idx):
            continue
        sub_p = _take(p, idx)
        sub_geo = type(geo)(u=geo.u[idx], v=geo.v[idx], g=geo.g[idx], dome=geo.dome[idx],
                            heart=geo.heart[idx], lung=geo.lung[idx])
        ctx = Context(p=sub_p, geo=sub_geo, air=air[idx], vessels=vessels[idx], sev=sev[idx, k],
                      r=r[idx, k], px=px[idx])
        delta, mask = fn(ctx)
        A[idx] += delta
        lesion[idx] |= mask.astype(np.uint16) << np.uint16(k)
    marker = d["marker"][rows]
    idx = np.flatnonzero(marker)
    if len(idx):
        A[idx] += acq.chest_drain(geo.u[idx], geo.v[idx], geo.lung[idx], d["drain_side"][rows][idx],
                                  p["lw"][idx], d["drain_start"][rows][idx], px[idx])
    lung = geo.lung
    if internal != size:
        A = acq.upsample(A, size)
        lung = acq.upsample(lung, size, smooth=False)
        lesion = acq.upsample(lesion, size, smooth=False)
    A = acq.blur(A, spec.blur * size)
    noise = np.frombuffer(noise_rng.bytes(A.size), dtype=np.uint8).reshape(A.shape)
    img = acq.display(A, spec, d["exposure"][rows], noise)
    if spec.collimation > 0:
        borders = (d["borders"][rows] * spec.collimation * size).astype(np.intp)
        acq.collimate(img, borders, spec.collimation_value)
    acq.burn_text(img, spec.marker, spec.marker_corner, d["marker_jitter"][rows])
    acq.burn_text(img, spec.text, spec.text_corner, d["text_jitter"][rows])
    return img, lung.astype(np.uint8), lesion


def shortcut_masks(spec: HospitalSpec, seed: int, block: int, count: int, size: int,
                   shortcut: bool = True, dilate: int = 1) -> np.ndarray:
    """Where the shortcut marker (the chest drain) is drawn: uint8 [count, S, S], 1 on the drain.

    Caches store lung and lesion masks but not this one; it is redrawn here from the same
    random draws as :func:`render_block` (same spec, seed, block), so it matches the cached
    image exactly. Images without the marker (or ``shortcut=False``) get an empty mask.
    ``dilate`` grows the mask by that many pixels to cover the blur of the acquisition.
    """
    d = _draw_block(spec, seed, block, shortcut)
    internal = max(16, int(round(size * spec.resolution)))
    out = np.zeros((count, size, size), np.uint8)
    idx = np.flatnonzero(d["marker"][:count])
    if not len(idx):
        return out
    p = _take(d["p"], idx)
    geo = lung_geometry(p, internal)
    px = (2.0 / (internal * p["sx"]))[:, None, None].astype(F32)
    drain = acq.chest_drain(geo.u, geo.v, geo.lung, d["drain_side"][idx], p["lw"],
                            d["drain_start"][idx], px) > 0.03
    if internal != size:
        drain = acq.upsample(drain.astype(np.uint8), size, smooth=False) > 0
    if dilate > 0:
        from scipy.ndimage import binary_dilation

        drain = binary_dilation(drain, structure=np.ones((1, 3, 3), bool), iterations=int(dilate))
    out[idx] = drain
    return out
