"""The 14 NIH findings: each one a function that draws its lesion into a batch of images.

A finding is described by a *severity* in ``(0, 1]`` (how large / dense / far advanced) and
eight uniform random numbers (where, which side, what shape), drawn per image by the
generator. Findings act in two places:

1. :func:`adjust_anatomy` changes the anatomy numbers before anything is drawn, for the
   findings that are a change of shape: **cardiomegaly** (the cardiothoracic ratio, CTR, goes
   above 0.5), **emphysema** (hyperinflated, hyperlucent lungs with flat, low domes and sparse
   markings), **atelectasis** (volume loss: the hemidiaphragm on its side rises) and
   **fibrosis** (smaller lungs).
2. One function per finding in :data:`FINDINGS` returns, for the images that have it, the
   change of attenuation (float32 [k, S, S]) and the lesion mask (bool [k, S, S]).

What they look like (the radiological signs a student should recognise):

* Atelectasis: plate-like linear opacity at a base, raised hemidiaphragm on that side.
* Cardiomegaly: heart wider than half the inner thorax (CTR > 0.5); mask = the heart.
* Consolidation: dense, homogeneous lobar opacity with a sharp fissural border and dark
  air bronchograms inside.
* Edema: bilateral perihilar ("bat-wing") haze with Kerley B lines at the lateral bases.
* Effusion: basal opacity with a meniscus (higher laterally), blunted costophrenic angle,
  the dome silhouette lost; small ones only blunt the angle.
* Emphysema: see above; mask = both lungs (a diffuse finding).
* Fibrosis: reticular net, peripheral and basal, with volume loss.
* Hernia (hiatal): a round retrocardiac opacity with an air-fluid level above the diaphragm.
* Infiltration: several ill-defined patchy opacities.
* Mass: a dense lobulated opacity larger than 3 cm.
* Nodule: a small (< 3 cm) round well-defined opacity.
* Pleural thickening: a dense band along the lateral chest wall or an apical cap.
* Pneumonia: patchy, ill-defined airspace opacity, mostly in a lower zone.
* Pneumothorax: a peripheral (apical and lateral) region without lung markings, more lucent,
  bounded by a thin bright visceral pleural line.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrlab.labels import NIH14

from .anatomy import LUNG_CENTRE, LUNG_RADIUS, HILUM, F32, LungGeometry, vessel_bank

#: Uniform random numbers each finding gets per image.
N_RANDOM = 8


@dataclass
class Context:
    """What a finding function may read, for the rows of a sub-batch that have the finding."""

    p: dict             # anatomy numbers of these rows
    geo: LungGeometry   # their lung geometry
    air: np.ndarray     # [k, S, S] air the lungs removed (what fluid puts back)
    vessels: np.ndarray  # [k, S, S] vascular markings inside the lungs
    sev: np.ndarray     # [k] severity
    r: np.ndarray       # [k, N_RANDOM] uniforms
    px: np.ndarray      # [k, 1, 1] size of one pixel in canonical units

    def col(self, a):
        return np.asarray(a, dtype=F32)[:, None, None]

    def side(self, j: int = 0) -> np.ndarray:
        """-1 (patient's right, image left) or +1 from random number ``j``, as [k, 1, 1]."""
        return self.col(np.where(self.r[:, j] < 0.5, -1.0, 1.0))

    def side_mask(self, s) -> np.ndarray:
        return (self.geo.u * s) > 0


def adjust_anatomy(p: dict, present: np.ndarray, sev: np.ndarray, r: np.ndarray) -> None:
    """Edit the anatomy numbers in place for the shape-changing findings.

    ``present`` bool [n, 14]: which findings are drawn; ``sev`` [n, 14]; ``r`` [n, 14, 8].
    """
    i = NIH14.index
    e = present[:, i("Emphysema")]
    s = sev[:, i("Emphysema")]
    p["cp_r"] = np.where(e, p["cp_r"] + 0.10 * s, p["cp_r"]).astype(F32)
    p["cp_l"] = np.where(e, p["cp_l"] + 0.10 * s, p["cp_l"]).astype(F32)
    p["dh_r"] = np.where(e, p["dh_r"] * (1 - 0.65 * s), p["dh_r"]).astype(F32)
    p["dh_l"] = np.where(e, p["dh_l"] * (1 - 0.65 * s), p["dh_l"]).astype(F32)
    p["apex"] = np.where(e, p["apex"] - 0.04 * s, p["apex"]).astype(F32)
    p["air"] = np.where(e, p["air"] * (1 + 0.30 * s), p["air"]).astype(F32)
    p["vessel"] = np.where(e, p["vessel"] * (1 - 0.6 * s), p["vessel"]).astype(F32)
    p["ctr"] = np.where(e, p["ctr"] - 0.04 * s, p["ctr"]).astype(F32)
    p["heart_ar"] = np.where(e, p["heart_ar"] * (1 + 0.15 * s), p["heart_ar"]).astype(F32)

    f = present[:, i("Fibrosis")]
    s = sev[:, i("Fibrosis")]
    for k in ("cp_r", "cp_l"):
        p[k] = np.where(f, p[k] - 0.07 * s, p[k]).astype(F32)
    p["lw"] = np.where(f, p["lw"] * (1 - 0.04 * s), p["lw"]).astype(F32)

    a = present[:, i("Atelectasis")]
    s = sev[:, i("Atelectasis")]
    right = r[:, i("Atelectasis"), 0] < 0.5
    p["cp_r"] = np.where(a & right, p["cp_r"] - 0.05 - 0.12 * s, p["cp_r"]).astype(F32)
    p["cp_l"] = np.where(a & ~right, p["cp_l"] - 0.05 - 0.12 * s, p["cp_l"]).astype(F32)

    c = present[:, i("Cardiomegaly")]
    s = sev[:, i("Cardiomegaly")]
    p["ctr"] = np.where(c, cardiothoracic_ratio(s) + 0.02 * p["ap"], p["ctr"]).astype(F32)


def cardiothoracic_ratio(severity):
    """CTR of an enlarged heart: 0.50 at the smallest severity any hospital calls (0.15),
    0.56 at severity 0.45 (target_old's threshold), 0.67 at 1."""
    return 0.47 + 0.2 * np.asarray(severity, dtype=F32)


def _soft(x):
    """0 below -1, 1 above +1, linear in between (a cheap smooth step)."""
    return np.clip(0.5 + 0.5 * x, 0, 1)


def _pick(ctx: Context, rnd: np.ndarray, region: np.ndarray | None = None):
    """A random point inside each image's ``region`` (default: the safe core of the lungs,
    away from the outline, the diaphragm and the heart), as canonical ``(u0, v0)`` [k, 1, 1].

    ``rnd`` [k] uniforms pick the point: it is the ``rnd``-quantile of the region's pixels in
    raster order, so a lesion is always drawn where there is lung."""
    geo = ctx.geo
    if region is None:
        region = geo.lung & (geo.g < 0.7) & (geo.v < geo.dome - 0.1) & (geo.heart > 1.4)
    flat = region.reshape(len(region), -1)
    count = flat.sum(1)
    empty = count == 0
    if empty.any():  # fall back to any lung pixel
        flat = np.where(empty[:, None], geo.lung.reshape(len(region), -1), flat)
        count = flat.sum(1)
    target = np.minimum((rnd * count).astype(np.int64), np.maximum(count - 1, 0))
    idx = np.argmax(np.cumsum(flat, axis=1) > target[:, None], axis=1)
    size = region.shape[-1]
    rows, cols = idx // size, idx % size
    k = np.arange(len(region))
    u0 = geo.u[k, 0, cols][:, None, None]
    v0 = geo.v[k, rows, 0][:, None, None]
    return u0, v0


def _blob(ctx: Context, u0, v0, radius):
    """Squared normalised distance to a centre (the basis of round lesions)."""
    du = (ctx.geo.u - u0) / radius
    dv = (ctx.geo.v - v0) / radius
    return du * du + dv * dv


def atelectasis(ctx: Context):
    s = ctx.side(0)
    lung = ctx.geo.lung & ctx.side_mask(s)
    lw = ctx.col(ctx.p["lw"])
    dome = ctx.geo.dome
    w = np.abs(ctx.geo.u)
    # a plate: thin band 0.08..0.2 above the (raised) dome, slightly oblique
    tilt = ctx.col(0.25 * (ctx.r[:, 2] - 0.5))
    centre = dome - ctx.col(0.08 + 0.10 * ctx.r[:, 1]) + tilt * (w - LUNG_CENTRE * lw)
    half = np.maximum(ctx.col(0.018 + 0.03 * ctx.sev), 1.2 * ctx.px)
    band = np.clip(1 - np.abs(ctx.geo.v - centre) / half, 0, 1)
    extent = np.clip(1 - np.abs(w - LUNG_CENTRE * lw) / (LUNG_RADIUS * lw * 0.85), 0, 1)
    plate = band * np.minimum(extent * 3, 1) * lung
    # plus a hazy increase in density of the collapsed base
    base = np.clip((ctx.geo.v - (dome - 0.25)) / 0.25, 0, 1) * lung
    delta = plate * ctx.col(0.35 + 0.25 * ctx.sev) + base * ctx.col(0.12 * ctx.sev) * ctx.air
    return delta, (plate > 0.3) | (base * ctx.col(ctx.sev) > 0.3)


def cardiomegaly(ctx: Context):
    heart = ctx.geo.heart < 1
    return np.zeros(heart.shape, F32), heart


def consolidation(ctx: Context):
    u0, v0 = _pick(ctx, ctx.r[:, 1])
    lw = ctx.col(ctx.p["lw"])
    ru = ctx.col(0.10 + 0.10 * ctx.sev) * lw
    rv = ru * ctx.col(0.8 + 0.5 * ctx.r[:, 3])
    du = (ctx.geo.u - u0) / ru
    dv = (ctx.geo.v - v0) / rv
    d2 = du * du + dv * dv
    # a fissure cuts the top sharply, the rest of the margin fades over a few pixels
    region = np.clip((1 - d2) * 3, 0, 1) * (ctx.geo.v > v0 - rv * 0.6) * ctx.geo.lung
    bank = vessel_bank(ctx.geo.u.shape[2])
    bronchi = bank[(ctx.r[:, 4] * len(bank)).astype(int)]
    dens = ctx.col(0.75 + 0.2 * ctx.sev)
    delta = region * (ctx.air * dens - 0.35 * bronchi * ctx.air)
    return delta, region > 0.5


def edema(ctx: Context):
    hu, hv = HILUM
    lw = ctx.col(ctx.p["lw"])
    w = np.abs(ctx.geo.u)
    sig = ctx.col(0.30 + 0.20 * ctx.sev) * lw
    du = (w - hu * lw) / sig
    dv = (ctx.geo.v - hv - 0.05) / (sig * 1.3)
    haze = np.exp(-(du * du + dv * dv)) * ctx.geo.lung
    # Kerley B lines: short horizontal lines at the lateral lung bases
    lat = np.clip((w - (LUNG_CENTRE + 0.6 * LUNG_RADIUS) * lw) / (0.3 * LUNG_RADIUS * lw), 0, 1)
    low = np.clip((ctx.geo.v - 0.2) / 0.2, 0, 1)
    lines = np.clip(np.cos(ctx.geo.v * (2 * np.pi / np.maximum(0.045, 3 * ctx.px))) * 3 - 2, 0, 1)
    kerley = lat * low * lines * ctx.geo.lung
    delta = ctx.air * (haze * ctx.col(0.45 + 0.45 * ctx.sev)) + kerley * ctx.col(0.12 + 0.1 * ctx.sev)
    return delta, haze > 0.45


def effusion(ctx: Context):
    # side from r[0]; a quarter of effusions are bilateral
    bilateral = ctx.col(ctx.r[:, 1] < 0.25)
    s = ctx.side(0)
    lung = ctx.geo.lung & (ctx.side_mask(s) | (bilateral > 0))
    left = ctx.geo.u > 0
    cp = np.where(left, ctx.col(ctx.p["cp_l"]), ctx.col(ctx.p["cp_r"]))
    dh = np.where(left, ctx.col(ctx.p["dh_l"]), ctx.col(ctx.p["dh_r"]))
    lw = ctx.col(ctx.p["lw"])
    w = np.abs(ctx.geo.u)
    h = ctx.col(0.55 * ctx.sev ** 1.2)
    # fluid level: just above the dome's peak for the smallest (only the costophrenic angle
    # fills), higher with severity; the meniscus climbs along the lateral chest wall
    lat = np.clip((w - 0.12) / ((LUNG_CENTRE + LUNG_RADIUS) * lw - 0.12), 0, 1)
    top = cp - dh * 0.75 - h - (0.08 + 0.35 * h) * lat ** 2
    depth = (ctx.geo.v - top) / 0.09
    fluid = np.clip(depth, 0, 1) * lung
    # fluid gives back the air of the lung in front of it and a little more
    delta = fluid * (ctx.air + 0.08)
    return delta, (depth > 0.5) & lung


def emphysema(ctx: Context):
    return np.zeros(ctx.geo.lung.shape, F32), ctx.geo.lung.copy()


def fibrosis(ctx: Context):
    lw = ctx.col(ctx.p["lw"])
    u, v = ctx.geo.u / lw, ctx.geo.v
    period = np.maximum(ctx.col(0.07 - 0.02 * ctx.sev), 2.5 * ctx.px)
    ph = ctx.col(ctx.r[:, 0] * 6.283)
    net = np.abs(np.cos((u * 0.8 + v * 0.6) * (6.283 / period) + ph)) \
        + np.abs(np.cos((u * 0.6 - v * 0.8) * (6.283 / period) - ph))
    net = np.clip((2 - net) * 2 - 2.0, 0, 1)          # thin lines where the cosines are small
    where = np.clip((ctx.geo.g - 0.15) / 0.4, 0, 1) * np.clip((ctx.geo.v + 0.35) / 0.5, 0, 1)
    where = where * ctx.geo.lung
    delta = net * where * ctx.col(0.35 + 0.35 * ctx.sev) \
        + where * ctx.air * ctx.col(0.1 + 0.25 * ctx.sev)
    return delta, where > 0.35


def hernia(ctx: Context):
    lw = ctx.col(ctx.p["lw"])
    dome = ctx.col(ctx.p["cp_l"] - ctx.p["dh_l"])
    rad = ctx.col(0.09 + 0.06 * ctx.sev) * lw
    u0 = ctx.col(0.04 + 0.06 * ctx.r[:, 0]) * lw
    v0 = dome - rad * 0.6
    d2 = _blob(ctx, u0, v0, rad)
    inside = d2 < 1
    level = v0 - rad * ctx.col(0.1 + 0.3 * ctx.r[:, 1])
    gas = inside & (ctx.geo.v < level)
    body = np.sqrt(np.clip(1 - d2, 0, 1))
    delta = body * F32(0.12) - gas * ctx.col(0.45 + 0.2 * ctx.sev) * np.sqrt(np.clip(1 - d2, 0, 1) + 0.3)
    rim = np.clip(1 - np.abs(np.sqrt(d2) - 1) * rad / np.maximum(1.0 * ctx.px, 0.01), 0, 1)
    delta = delta + rim * F32(0.15)
    return delta.astype(F32), inside


def infiltration(ctx: Context):
    delta = np.zeros(ctx.geo.lung.shape, F32)
    lw = ctx.col(ctx.p["lw"])
    r = ctx.r
    for k in range(3):
        u0, v0 = _pick(ctx, (r[:, 1] + 0.37 * k) % 1.0)
        rad = ctx.col(0.07 + 0.05 * ctx.sev + 0.03 * ((r[:, 3] + 0.29 * k) % 1.0)) * lw
        d2 = _blob(ctx, u0, v0, rad)
        delta += np.exp(-2 * d2)
    delta *= ctx.geo.lung
    mask = delta > 0.35
    return delta * ctx.air * ctx.col(0.45 + 0.3 * ctx.sev), mask


def mass(ctx: Context):
    lw = ctx.col(ctx.p["lw"])
    rad = ctx.col(0.08 + 0.09 * ctx.sev) * lw
    geo = ctx.geo
    u0, v0 = _pick(ctx, ctx.r[:, 1], geo.lung & (geo.g < 0.45) & (geo.v < geo.dome - rad)
                   & (geo.heart > 2.0))
    d2 = _blob(ctx, u0, v0, rad)
    # lobulated: a second overlapping lobe
    ang = ctx.col(ctx.r[:, 3] * 6.283)
    d2b = _blob(ctx, u0 + 0.6 * rad * np.cos(ang), v0 + 0.6 * rad * np.sin(ang), rad * 0.7)
    dens = np.sqrt(np.clip(1 - d2, 0, 1)) + 0.8 * np.sqrt(np.clip(1 - d2b, 0, 1))
    dens = np.minimum(dens, 1.2)
    delta = dens * ctx.col(0.5 + 0.15 * ctx.sev)
    return delta, (d2 < 1) | (d2b < 1)


def nodule(ctx: Context):
    u0, v0 = _pick(ctx, ctx.r[:, 1])
    lw = ctx.col(ctx.p["lw"])
    rad = np.maximum(ctx.col(0.035 + 0.03 * ctx.sev) * lw, 1.5 * ctx.px)
    d2 = _blob(ctx, u0, v0, rad)
    delta = np.sqrt(np.clip(1 - d2, 0, 1)) * ctx.col(0.45 + 0.15 * ctx.sev)
    return delta, d2 < 1


def pleural_thickening(ctx: Context):
    s = ctx.side(0)
    lung = ctx.geo.lung & ctx.side_mask(s)
    lw = ctx.col(ctx.p["lw"])
    v = ctx.geo.v
    thick = np.maximum(ctx.col(0.035 + 0.05 * ctx.sev), 1.5 * ctx.px) / (LUNG_RADIUS * lw)
    # distance inwards from the lung outline, in units of the band's thickness
    inward = (1 - np.sqrt(ctx.geo.g)) / thick
    band = np.clip(1.5 - inward, 0, 1)
    lateral = np.abs(ctx.geo.u) > LUNG_CENTRE * lw
    apical = ctx.col(ctx.r[:, 1] < 0.5) > 0
    apex = ctx.col(ctx.p["apex"])
    # an apical cap (top of the lung) or a lateral band (mid and lower zones), soft-ended
    cap = np.clip((apex + 0.35 - v) / 0.1, 0, 1)
    mid = np.clip((v + 0.35) / 0.12, 0, 1) * np.clip((0.5 - v) / 0.12, 0, 1) * lateral
    region = band * np.where(apical, cap, mid) * lung
    dens = ctx.col(ctx.p["air"] * (0.5 + 0.3 * ctx.sev) + 0.08)
    return region * dens, (region > 0.5)


def pneumonia(ctx: Context):
    geo = ctx.geo
    u0, v0 = _pick(ctx, ctx.r[:, 1], geo.lung & (geo.g < 0.7) & (geo.v > -0.1)
                   & (geo.v < geo.dome - 0.08) & (geo.heart > 1.3))
    lw = ctx.col(ctx.p["lw"])
    rad = ctx.col(0.10 + 0.08 * ctx.sev) * lw
    acc = np.zeros(ctx.geo.lung.shape, F32)
    for k in range(3):
        ang = ctx.col((ctx.r[:, 3] + k / 3) * 6.283)
        off = ctx.col(0.5 + 0.4 * ((ctx.r[:, 4] + 0.37 * k) % 1.0))
        acc += np.exp(-1.5 * _blob(ctx, u0 + off * rad * np.cos(ang), v0 + off * rad * np.sin(ang),
                                    rad * 0.8))
    acc = np.minimum(acc, 1.0) * ctx.geo.lung
    delta = acc * ctx.air * ctx.col(0.6 + 0.3 * ctx.sev)
    return delta, acc > 0.4


def pneumothorax(ctx: Context):
    s = ctx.side(0)
    side = ctx.side_mask(s)
    lung = ctx.geo.lung & side
    lw = ctx.col(ctx.p["lw"])
    w = np.abs(ctx.geo.u)
    v = ctx.geo.v
    sev = ctx.col(ctx.sev)
    ru = LUNG_RADIUS * lw
    # the collapsed lung: lateral edge pulled in (most at the top), apex pulled down
    pull = (0.12 + 0.55 * sev) * ru * np.clip((0.55 - v) / 0.9, 0.1, 1.0)
    eu = (w - LUNG_CENTRE * lw + pull) / ru
    apex = ctx.col(ctx.p["apex"]) + 0.10 + 0.45 * sev
    vm = F32(-0.05)
    ev = np.minimum(v - vm, 0) / (vm - apex)
    g2 = eu * eu + ev * ev
    region = lung & (g2 >= 1)
    # visceral pleural line just inside the region boundary
    dist = (np.sqrt(g2) - 1) * ru
    line = np.clip(1 - np.abs(dist) / np.maximum(0.012, 0.8 * ctx.px), 0, 1) * lung
    # the collapsed lung behind the line is a little denser than before
    denser = lung & ~region
    delta = line * F32(0.25) - region * (ctx.vessels + F32(0.22) * ctx.air) \
        + denser * (F32(0.08) * ctx.col(ctx.sev)) * ctx.air
    return delta.astype(F32), region


#: label -> finding function, in NIH14 order
FINDINGS = {
    "Atelectasis": atelectasis, "Cardiomegaly": cardiomegaly, "Consolidation": consolidation,
    "Edema": edema, "Effusion": effusion, "Emphysema": emphysema, "Fibrosis": fibrosis,
    "Hernia": hernia, "Infiltration": infiltration, "Mass": mass, "Nodule": nodule,
    "Pleural_Thickening": pleural_thickening, "Pneumonia": pneumonia, "Pneumothorax": pneumothorax,
}
assert tuple(FINDINGS) == NIH14
