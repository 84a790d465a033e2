"""Parametric chest anatomy, drawn for a whole batch at once on coordinate grids.

Every image gets a handful of numbers (:func:`draw_anatomy`) and the renderer
(:func:`render_anatomy`) turns them into an *attenuation* map: how much X-ray each pixel's
ray lost on its way through the body (high = bright on the film: bone, heart, fluid; low =
dark: air in the lungs, outside the body). Geometry lives in a canonical frame
``(u, v)`` in which the body is centred, ``u`` runs from the image's left (the patient's
right) to its right and ``v`` from the top down; each image maps that frame to its own
pixels by a shift and a scale, so the whole batch is computed with NumPy broadcasting, one
pixel row and one pixel column at a time, never in a Python loop over pixels.

Parts (canonical units, the thorax is about 1.5 wide):

* body outline: soft tissue whose thickness falls off like a cylinder towards the skin,
  with neck and shoulders;
* lungs: each an ellipse at the top (the apex) with straight lateral walls below, cut by
  the diaphragm dome, the mediastinum and the heart. The lung mask is exactly that region,
  so masks and pixels come from the same geometry;
* heart: an ellipse whose width is the cardiothoracic ratio (CTR) times the inner thorax
  width, two thirds of it left of the midline;
* mediastinum with the aortic knob, spine with vertebral end plates, posterior ribs,
  clavicles, breast shadows (female patients), a gastric air bubble under the left dome;
* vascular markings: branching trees from both hila, fading towards the periphery (a bank
  of pre-drawn trees per image size, chosen per image).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

F32 = np.float32

#: Inner thorax width (rib to rib) in canonical units for lung-width factor 1.
THORAX_WIDTH = 1.5
LUNG_CENTRE = 0.42   # |u| of each lung's centre
LUNG_RADIUS = 0.33   # half-width of each lung
HILUM = (0.17, -0.02)
HEART_TILT = 0.55    # radians between the heart's long axis and the horizontal
HEART_STRETCH = 1.3  # vertical stretch of the (tilted) heart ellipse


def draw_anatomy(rng: np.random.Generator, n: int, *, male: np.ndarray, age: np.ndarray,
                 ap: np.ndarray, habitus: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image anatomy numbers (float32 arrays of length ``n``).

    ``habitus`` [n, 3] holds patient-level standard-normal draws (shared by a patient's
    follow-up images: body width, lung height, heart size); everything else jitters per image.
    Findings then edit these numbers (a big heart, a raised hemidiaphragm, hyperinflation).
    """
    def N(mean, sd):
        return (mean + sd * rng.standard_normal(n)).astype(F32)

    def U(lo, hi):
        return rng.uniform(lo, hi, n).astype(F32)

    male = male.astype(bool)
    ap = ap.astype(bool)
    old = np.clip((age - 40.0) / 40.0, -1, 1.2).astype(F32)
    p = {
        # placement of the canonical frame in the image (AP views are magnified)
        "cx": N(0.0, 0.025),
        "cy": N(0.06, 0.025),
        "sx": (0.93 + 0.03 * habitus[:, 0] + 0.02 * rng.standard_normal(n) + 0.04 * ap).astype(F32),
        "sy": (0.95 + 0.02 * habitus[:, 1] + 0.02 * rng.standard_normal(n) + 0.02 * ap).astype(F32),
        "lw": (1.0 + 0.035 * habitus[:, 0] - 0.03 * (~male)).astype(F32),
        "apex": N(-0.80, 0.02),
        # costophrenic level (depth of inspiration; AP/supine images are shallower) and domes
        "cp_r": (0.70 + 0.04 * habitus[:, 1] + 0.02 * rng.standard_normal(n) - 0.06 * ap).astype(F32),
        "dh_r": N(0.24, 0.03),
        "dh_l": N(0.20, 0.03),
        # cardiothoracic ratio; AP projection magnifies the heart
        "ctr": np.clip(0.43 + 0.02 * habitus[:, 2] + 0.015 * rng.standard_normal(n)
                       + 0.04 * ap + 0.01 * old, 0.34, 0.49).astype(F32),
        "heart_ar": N(1.30, 0.05),
        "med": N(0.12, 0.008),
        "knob": (0.05 + 0.025 * np.clip(old, 0, None) + 0.01 * rng.standard_normal(n)).astype(F32),
        "air": N(0.70, 0.04),
        "vessel": N(1.0, 0.15),
        "vessel_id": rng.integers(0, 1 << 30, n).astype(np.int64),
        "rib_sp": N(0.135, 0.006),
        "rib_ph": U(0.0, 1.0),
        "bone": np.clip(1.0 - 0.25 * np.clip(old, 0, None) + 0.08 * rng.standard_normal(n),
                        0.5, 1.3).astype(F32),
        "clav": (-0.70 + 0.02 * rng.standard_normal(n) - 0.06 * ap).astype(F32),
        "breast": np.where(male, 0.0, U(0.10, 0.22)).astype(F32),
        "bubble": np.where(rng.random(n) < 0.7, U(0.04, 0.08), 0.0).astype(F32),
        "ap": ap.astype(F32),
    }
    p["cp_l"] = (p["cp_r"] + 0.03 + 0.015 * rng.standard_normal(n)).astype(F32)
    return p


def coordinates(p: dict[str, np.ndarray], size: int, rows=None):
    """Canonical coordinates of every pixel: ``u`` [n, 1, S] (columns), ``v`` [n, S, 1] (rows)."""
    x = ((np.arange(size, dtype=F32) + F32(0.5)) / F32(size)) * F32(2) - F32(1)
    sel = slice(None) if rows is None else rows
    u = (x[None, None, :] - p["cx"][sel, None, None]) / p["sx"][sel, None, None]
    v = (x[None, :, None] - p["cy"][sel, None, None]) / p["sy"][sel, None, None]
    return u, v


def _col(a, rows=None):
    a = a if rows is None else a[rows]
    return a[:, None, None]


@dataclass
class LungGeometry:
    """The lungs of a batch (or of a subset of it): level function and masks."""

    u: np.ndarray         # [n, 1, S]
    v: np.ndarray         # [n, S, 1]
    g: np.ndarray         # [n, S, S] ellipse level (<1 inside the lung outline)
    dome: np.ndarray      # [n, 1, S] diaphragm height (v) at each column
    heart: np.ndarray     # [n, S, S] heart ellipse level (<1 inside the heart)
    lung: np.ndarray      # [n, S, S] bool: exact lung mask


def lung_geometry(p: dict[str, np.ndarray], size: int, rows=None) -> LungGeometry:
    """Lung outlines, diaphragm, heart and mediastinum for ``rows`` (default: all images)."""
    c = functools.partial(_col, rows=rows)
    u, v = coordinates(p, size, rows)
    left = u > 0                                  # the patient's left = the image's right
    w = np.abs(u)
    lw = c(p["lw"])
    ru = LUNG_RADIUS * lw * np.where(left, F32(1.0), F32(1.03))
    eu = (w - LUNG_CENTRE * lw) / ru
    vm = F32(-0.05)
    ev = np.minimum(v - vm, 0) / (vm - c(p["apex"]))
    g = eu * eu + ev * ev
    # diaphragm: a dome per side peaking medially, lowest at the costophrenic angle
    cp = np.where(left, c(p["cp_l"]), c(p["cp_r"]))
    dh = np.where(left, c(p["dh_l"]), c(p["dh_r"]))
    t = (w - 0.30 * lw) / (0.45 * lw)
    dome = cp - dh * np.maximum(1 - t * t, 0)
    # mediastinum (aortic knob on the patient's left; on the right it widens low down into
    # the cardiophrenic angle): the lungs lie outside -m_right < u < m_left
    med = c(p["med"])
    m_left = med + c(p["knob"]) * np.exp(-((v + 0.40) / 0.07) ** 2)
    m_right = med + 0.01 * np.maximum(v + 0.2, 0) + 0.35 * np.maximum(v - 0.25, 0)
    # heart: an ellipse whose long axis points down to the apex on the patient's left; its
    # horizontal extent is CTR x inner thorax width, a third of it right of the midline
    rh = 0.5 * THORAX_WIDTH * c(p["ctr"]) * lw
    ar = c(p["heart_ar"])
    cs, sn = F32(np.cos(HEART_TILT)), F32(np.sin(HEART_TILT))
    b = rh / np.sqrt(ar * ar * cs * cs + sn * sn)
    a = ar * b
    uh = rh / 3
    # big hearts grow mostly sideways (globular), not upwards
    stretch = HEART_STRETCH * np.sqrt(0.45 / c(p["ctr"]))
    half_v = stretch * np.sqrt(a * a * sn * sn + b * b * cs * cs)
    vh = c(p["cp_l"]) - 0.04 - 0.6 * half_v
    du, dv = u - uh, (v - vh) / stretch
    # hu^2 + hv^2 of the rotated ellipse, expanded so that only three operations touch
    # every pixel: P(u) + Q(v) + du * (K dv)
    ia2, ib2 = 1 / (a * a), 1 / (b * b)
    P = du * du * (cs * cs * ia2 + sn * sn * ib2)
    Q = dv * dv * (sn * sn * ia2 + cs * cs * ib2)
    heart = du * (dv * (2 * cs * sn * (ia2 - ib2)))
    heart += P
    heart += Q
    lung = g < 1
    lung &= v < dome
    lung &= (u >= m_left) | (u <= -m_right)
    lung &= heart >= 1
    return LungGeometry(u=u, v=v, g=g, dome=dome, heart=heart, lung=lung)


@functools.lru_cache(maxsize=8)
def vessel_bank(size: int, count: int = 24) -> np.ndarray:
    """``count`` pre-drawn vascular trees (float32 [count, S, S], 0..1) in the canonical frame.

    Drawn once per image size with a fixed seed (so they are identical everywhere): from each
    hilum about a dozen vessels fan out, branch twice and taper towards the periphery.
    """
    rng = np.random.default_rng(20240607)
    x = ((np.arange(size, dtype=F32) + F32(0.5)) / F32(size)) * F32(2) - F32(1)
    bank = np.zeros((count, size, size), dtype=F32)
    px = 2.0 / size
    for k in range(count):
        img = bank[k]
        for side in (-1.0, 1.0):
            stack = []
            for _ in range(9):
                ang = rng.uniform(-0.45 * np.pi, 0.55 * np.pi)    # 0 = lateral, +pi/2 = down
                if rng.random() < 0.35:
                    ang = rng.uniform(-0.95 * np.pi, -0.5 * np.pi)  # up towards the apex
                stack.append((side * HILUM[0], HILUM[1], ang, 0.16, 0.024, 1.0, 0))
            while stack:
                x0, y0, ang, length, width, amp, depth = stack.pop()
                dx, dy = side * np.cos(ang), np.sin(ang)
                x1, y1 = x0 + dx * length, y0 + dy * length
                _segment(img, x, x0, y0, x1, y1, max(width, 0.7 * px), amp)
                if depth < 3:
                    for turn in (-1, 1):
                        stack.append((x1, y1, ang + turn * rng.uniform(0.2, 0.55),
                                      length * rng.uniform(0.55, 0.8), width * 0.65,
                                      amp * 0.65, depth + 1))
        np.minimum(img, 1.0, out=img)
    # markings fade towards the periphery; soften them by about a pixel at 224 px
    r = np.sqrt((np.abs(x[None, :]) - HILUM[0]) ** 2 + (x[:, None] - HILUM[1]) ** 2)
    bank *= (np.exp(-r / 0.5) * np.minimum(1, 0.35 + r / 0.15)).astype(F32)
    from .acquisition import blur

    return np.ascontiguousarray(blur(bank, size / 300))


def _segment(img, x, x0, y0, x1, y1, width, amp):
    """Add a line segment with a soft profile to ``img`` (only inside its bounding box)."""
    pad = 2 * width
    cols = np.flatnonzero((x >= min(x0, x1) - pad) & (x <= max(x0, x1) + pad))
    rows = np.flatnonzero((x >= min(y0, y1) - pad) & (x <= max(y0, y1) + pad))
    if not len(cols) or not len(rows):
        return
    X = x[cols][None, :]
    Y = x[rows][:, None]
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((X - x0) * dx + (Y - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0, 1)
    d2 = (X - x0 - t * dx) ** 2 + (Y - y0 - t * dy) ** 2
    prof = amp * np.exp(-d2 / (width * width))
    sub = img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    np.maximum(sub, prof.astype(F32), out=sub)


def _window(p: dict[str, np.ndarray], size: int, lo: float, hi: float, axis: str) -> slice:
    """Pixel rows (``axis="v"``) or columns (``"u"``) that canonical ``lo..hi`` covers in any
    image of the batch: local parts of the anatomy are only computed there."""
    c, s = (p["cy"], p["sy"]) if axis == "v" else (p["cx"], p["sx"])
    a = (c + s * lo + 1) * size / 2 - 1
    b = (c + s * hi + 1) * size / 2 + 1
    return slice(int(np.clip(np.floor(a.min()), 0, size)), int(np.clip(np.ceil(b.max()), 0, size)))


def body_attenuation(p: dict[str, np.ndarray], geo: LungGeometry):
    """Soft tissue, bones, heart and vessels without any finding.

    Returns ``(A, lung_air, vessels)``, float32 [n, S, S] each: the attenuation map, the air the
    lungs remove from it (what a fluid-filled lung puts back) and the vascular markings inside
    the lungs (what a pneumothorax takes away).

    Speed: terms that are a product of a row factor and a column factor are formed as outer
    products; periodic ribs use ``cos(a + b) = cos a cos b - sin a sin b`` so that the cosines
    are taken on rows and columns only; local parts (spine, trachea, clavicles, hila, gastric
    bubble, breasts) are computed inside their window of pixels only.
    """
    u, v = geo.u, geo.v
    w = np.abs(u)
    size = u.shape[2]
    c = _col
    bone = c(p["bone"])
    # body outline: neck, shoulders, chest wall; thickness falls off like a cylinder
    half = 0.23 + 0.72 / (1 + np.exp(-(v + 0.88) / 0.05)) + 0.03 * np.clip(v, 0, 1)
    A = (u * u) * (1 / (half * half))
    np.subtract(F32(1), A, out=A)
    np.maximum(A, 0, out=A)
    np.sqrt(A, out=A)
    # posterior ribs: arcs that rise a little from the spine, then fall laterally (inside
    # the rib cage only)
    rib_col = np.clip((w - 0.07) / 0.05, 0, 1) * np.clip((0.90 * c(p["lw"]) - w) / 0.06, 0, 1)
    rib_row = np.clip((v + 0.86) / 0.05, 0, 1) * np.clip((0.80 - v) / 0.1, 0, 1)
    two_pi = F32(2 * np.pi)
    a_v = two_pi * (v / c(p["rib_sp"]) + c(p["rib_ph"]))
    b_w = two_pi * (0.55 * w * w - 0.12 * w) / c(p["rib_sp"])
    band = np.cos(a_v) * np.cos(b_w)
    band -= np.sin(a_v) * np.sin(b_w)
    band *= F32(2.2)
    band -= F32(1.2)
    np.clip(band, 0, 1, out=band)
    band *= rib_col * (F32(0.13) * bone)
    band *= rib_row
    A += band
    # spine with vertebral end plates (visible through the mediastinum)
    cs = _window(p, size, -0.1, 0.1, "u")
    plates = 0.10 + 0.04 * np.cos(2 * np.pi * (v / 0.115))
    A[:, :, cs] += np.clip((0.085 - w[:, :, cs]) / 0.015, 0, 1) * plates
    # trachea: a dark air column in the upper midline, down to the carina
    cs = _window(p, size, -0.03, 0.05, "u")
    rs = _window(p, size, -1.2, -0.2, "v")
    trachea = np.clip((0.035 - np.abs(u[:, :, cs] - 0.01)) / 0.012, 0, 1)
    A[:, rs, cs] -= trachea * (np.clip((-0.25 - v[:, rs]) / 0.08, 0, 1) * F32(0.28))
    # clavicles: from the sternal end laterally and slightly upwards
    rs = _window(p, size, float(p["clav"].min()) - 0.1, float(p["clav"].max()) + 0.06, "v")
    t = w - 0.07
    vcl = c(p["clav"]) - 0.10 * t + 0.18 * t * t
    clav = np.abs(v[:, rs] - vcl)
    clav *= F32(-1 / 0.032)
    clav += F32(1)
    np.clip(clav, 0, 1, out=clav)
    clav *= np.clip(t / 0.03, 0, 1) * np.clip((0.62 - w) / 0.05, 0, 1) * (F32(0.30) * bone)
    A[:, rs] += clav
    # lungs: air removes attenuation, most where the lung is thickest; vessels add some back
    depth = np.subtract(F32(1), geo.g)
    np.maximum(depth, 0, out=depth)
    np.sqrt(depth, out=depth)
    np.sqrt(depth, out=depth)            # (1 - g) ** 0.25: dark out to the periphery
    base = np.subtract(geo.dome, v)
    base *= F32(25)
    np.clip(base, 0, 1, out=base)
    depth *= base
    depth *= c(p["air"])
    depth *= geo.lung
    lung_air = depth
    bank = vessel_bank(size)
    ves = bank[p["vessel_id"] % len(bank)]
    ves *= F32(0.36) * c(p["vessel"])
    ves *= geo.lung
    A -= lung_air
    A += ves
    # hilar shadows: pulmonary arteries and lymph nodes at the hila
    rs = _window(p, size, -0.4, 0.45, "v")
    hu = (w - HILUM[0] * c(p["lw"]) - 0.03) / 0.07
    hv = (v[:, rs] - HILUM[1] - 0.03) / 0.12
    hil = np.exp(-(hu * hu) - (hv * hv))
    hil *= F32(0.16)
    hil *= geo.lung[:, rs]
    A[:, rs] += hil
    # gastric bubble under the left dome
    dome_l = c(p["cp_l"]) - c(p["dh_l"])
    lo = float((p["cp_l"] - p["dh_l"]).min())
    hi = float((p["cp_l"] - p["dh_l"]).max())
    rs, cs = _window(p, size, lo, hi + 0.2, "v"), _window(p, size, 0.15, 0.45, "u")
    bu = (u[:, :, cs] - 0.30) / 0.12
    bv = (v[:, rs] - dome_l - 0.09) / 0.06
    A[:, rs, cs] -= np.clip(1 - bu * bu - bv * bv, 0, 1) * (c(p["bubble"]) * 4)
    # breast shadows (female patients): soft density over the lower lateral zones
    if np.any(p["breast"] > 0):
        rs = _window(p, size, 0.27, 0.77, "v")
        bu = (w - 0.45) / 0.36
        bv = (v[:, rs] - 0.52) / 0.24
        A[:, rs] += np.sqrt(np.clip(1 - bu * bu - bv * bv, 0, 1)) * c(p["breast"])
    return A, lung_air, ves
