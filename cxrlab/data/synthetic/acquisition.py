"""From attenuation to a stored radiograph: how a hospital's equipment shapes the image.

Everything here is a property of the site, not of the patient (see :class:`HospitalSpec`):

* **resolution**: hospitals with ``resolution < 1`` render the anatomy smaller and
  :func:`upsample` it (nearest neighbour, then a box filter: soft, slightly blocky);
* **blur**: detector unsharpness, a separable Gaussian made of 3-tap passes (:func:`blur`);
* **exposure**: an offset of the attenuation scale (under-exposed films look brighter);
* **noise**: quantum noise, stronger where more X-ray was absorbed;
* **display curve**: a sigmoid (``contrast``, ``window``) then a ``gamma``; this is what makes
  intensity histograms differ most between sites;
* **collimation**: borders outside the collimator, white (unexposed) or black (masked);
* **burned-in text and laterality markers** (a tiny built-in bitmap font);
* **the shortcut**: a chest drain along the lateral chest wall, outside the lungs
  (:func:`chest_drain`).
"""
from __future__ import annotations

import functools

import numpy as np

from .anatomy import F32, LUNG_CENTRE, LUNG_RADIUS

_GLYPHS = {
    "A": (".#.", "#.#", "###", "#.#", "#.#"), "B": ("##.", "#.#", "##.", "#.#", "##."),
    "C": (".##", "#..", "#..", "#..", ".##"), "D": ("##.", "#.#", "#.#", "#.#", "##."),
    "E": ("###", "#..", "##.", "#..", "###"), "H": ("#.#", "#.#", "###", "#.#", "#.#"),
    "I": ("###", ".#.", ".#.", ".#.", "###"), "L": ("#..", "#..", "#..", "#..", "###"),
    "M": ("#.#", "###", "###", "#.#", "#.#"), "N": ("##.", "#.#", "#.#", "#.#", "#.#"),
    "O": ("###", "#.#", "#.#", "#.#", "###"), "P": ("##.", "#.#", "##.", "#..", "#.."),
    "R": ("##.", "#.#", "##.", "#.#", "#.#"), "S": (".##", "#..", ".#.", "..#", "##."),
    "T": ("###", ".#.", ".#.", ".#.", ".#."), "U": ("#.#", "#.#", "#.#", "#.#", "###"),
    "X": ("#.#", "#.#", ".#.", "#.#", "#.#"), "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"), "2": ("##.", "..#", ".#.", "#..", "###"),
    "3": ("##.", "..#", ".#.", "..#", "##."), "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "##.", "..#", "##."), "6": (".##", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", ".#.", ".#.", ".#."), "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "##."), " ": ("...", "...", "...", "...", "..."),
    "-": ("...", "...", "###", "...", "..."), ":": ("...", ".#.", "...", ".#.", "..."),
}


def text_bitmap(text: str, scale: int = 1) -> np.ndarray:
    """A bool bitmap of ``text`` in the built-in 3x5 font (1 px between characters)."""
    unknown = sorted(set(text.upper()) - set(_GLYPHS))
    if unknown:
        raise ValueError(f"the burned-in text font has no glyph for {unknown}; "
                         f"use characters from {''.join(sorted(_GLYPHS))!r}")
    if not text:
        return np.zeros((5 * scale, 0), dtype=bool)
    cols = []
    for i, ch in enumerate(text.upper()):
        g = np.array([[c == "#" for c in row] for row in _GLYPHS[ch]], dtype=bool)
        cols.append(g)
        if i < len(text) - 1:
            cols.append(np.zeros((5, 1), dtype=bool))
    bmp = np.concatenate(cols, axis=1)
    return np.kron(bmp, np.ones((scale, scale), dtype=bool))


def upsample(x: np.ndarray, size: int, smooth: bool = True) -> np.ndarray:
    """Resize [n, R, R] to [n, S, S] (S >= R) by nearest neighbour; ``smooth`` adds a box
    filter as wide as one source pixel (for images; masks stay exact nearest-neighbour)."""
    r = x.shape[-1]
    if r == size:
        return x
    idx = ((np.arange(size) + 0.5) * r / size).astype(np.intp)
    out = x[:, idx][:, :, idx]
    if smooth:
        out = blur(out, 0.5 * size / r)
    return out


def _pass3(x: np.ndarray, a: float, axis: int) -> np.ndarray:
    """One 3-tap [a, 1-2a, a] pass along ``axis`` with replicated edges."""
    out = x * F32(1 - 2 * a)
    sl = [slice(None)] * x.ndim

    def s(a_, b_):
        sl[axis] = slice(a_, b_)
        return tuple(sl)

    out[s(1, None)] += F32(a) * x[s(None, -1)]
    out[s(None, -1)] += F32(a) * x[s(1, None)]
    out[s(0, 1)] += F32(a) * x[s(0, 1)]
    out[s(-1, None)] += F32(a) * x[s(-1, None)]
    return out


def blur(x: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian-like blur of [n, S, S] with s.d. ``sigma_px`` pixels (3-tap passes,
    each adding at most 0.6 px^2 of variance; nothing below 0.2 px)."""
    if sigma_px < 0.2:
        return x
    var = sigma_px ** 2
    passes = int(np.ceil(var / 0.6))
    a = var / passes / 2
    for _ in range(passes):
        x = _pass3(x, a, 1)
        x = _pass3(x, a, 2)
    return x


def display(A: np.ndarray, spec, offset: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Attenuation -> uint8 grey levels: exposure offset, quantum noise, display curve
    (:func:`display_lut`).

    ``noise`` is uint8 [n, S, S] of uniform random bytes (much cheaper to draw than Gaussian
    numbers), turned into zero-mean noise of s.d. ``spec.noise`` x (0.5 + attenuation): more
    absorbed X-ray, fewer photons, relatively more noise. ``A`` is overwritten.
    """
    A += offset[:, None, None].astype(F32)
    sd = np.clip(A, 0, 2)
    sd += F32(0.5)
    sd *= F32(spec.noise * np.sqrt(3) / 127.5)      # uniform on +-127.5 has s.d. 127.5/sqrt(3)
    z = noise.astype(F32)
    z -= F32(127.5)
    z *= sd
    A += z
    # display curve through a lookup table (sigmoid then gamma, quantised finely enough
    # that no grey level is lost): a few cheap operations per pixel instead of exp and pow
    lut = display_lut(spec.contrast, spec.window, spec.gamma)
    A -= F32(LUT_LO)
    A *= F32((LUT_SIZE - 1) / (LUT_HI - LUT_LO))
    np.clip(A, 0, LUT_SIZE - 1, out=A)
    return lut[A.astype(np.int16)]


LUT_LO, LUT_HI, LUT_SIZE = -1.0, 3.0, 8192


@functools.lru_cache(maxsize=32)
def display_lut(contrast: float, window: float, gamma: float) -> np.ndarray:
    """uint8 grey level for each of ``LUT_SIZE`` attenuation levels in ``[LUT_LO, LUT_HI]``:
    ``255 * sigmoid(contrast * (A - window)) ** gamma``, rounded."""
    a = np.linspace(LUT_LO, LUT_HI, LUT_SIZE)
    grey = (1 / (1 + np.exp(-contrast * (a - window)))) ** gamma
    return np.round(grey * 255).astype(np.uint8)


def collimate(img: np.ndarray, borders: np.ndarray, value: int) -> None:
    """Fill each image's borders (``borders`` [n, 4] px: top, bottom, left, right) in place."""
    n, S, _ = img.shape
    i = np.arange(S)
    rows = (i[None, :] < borders[:, 0:1]) | (i[None, :] >= S - borders[:, 1:2])
    cols = (i[None, :] < borders[:, 2:3]) | (i[None, :] >= S - borders[:, 3:4])
    outside = rows[:, :, None] | cols[:, None, :]
    img[outside] = value


def burn_text(img: np.ndarray, text: str, corner: str, jitter: np.ndarray,
              value: int = 255) -> None:
    """Burn ``text`` into a corner of every image (uint8 [n, S, S], in place), with a dark
    outline so that it stays readable on white borders; ``jitter`` [n, 2] in 0..1 moves it."""
    if not text:
        return
    S = img.shape[-1]
    scale = max(1, int(round(S / 80)))
    bmp = text_bitmap(text, scale)
    h, w = bmp.shape
    if w + 4 > S or h + 4 > S:
        return
    halo = np.zeros((h + 2, w + 2), dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            halo[dy:dy + h, dx:dx + w] |= bmp
    margin = max(2, S // 32)
    span = max(1, S // 16)
    for k in range(img.shape[0]):
        oy = margin + int(jitter[k, 0] * span)
        ox = margin + int(jitter[k, 1] * span)
        y0 = oy if corner[0] == "t" else S - oy - h - 2
        x0 = ox if corner[1] == "l" else S - ox - w - 2
        y0, x0 = min(max(y0, 0), S - h - 2), min(max(x0, 0), S - w - 2)
        sub = img[k, y0:y0 + h + 2, x0:x0 + w + 2]
        sub[halo] = 255 - value
        sub[1:1 + h, 1:1 + w][bmp] = value


def chest_drain(u: np.ndarray, v: np.ndarray, lung: np.ndarray, side: np.ndarray,
                lw: np.ndarray, start: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Attenuation of a chest drain (float32 [k, S, S]), never inside the lungs.

    The tube runs down the lateral chest wall just outside the lung from ``start`` (canonical
    v), then curves out of the body towards the image edge. ``side`` [k] is -1 / +1.
    """
    s = side[:, None, None].astype(F32)
    wall = ((LUNG_CENTRE + LUNG_RADIUS) * lw + 0.075)[:, None, None]
    path = wall + 0.9 * np.maximum(v - 0.45, 0) ** 2
    half = np.maximum(F32(0.018), 0.9 * px)
    tube = np.clip(1.5 - np.abs(u * s - path) / half, 0, 1)
    tube *= (v > start[:, None, None]) & (v < 1.3)
    # a side hole / connector: a short bright bar across the tube at its start
    bar = np.clip(1 - np.abs(v - start[:, None, None] - 0.03) / (2 * half), 0, 1)
    bar = bar * (np.abs(u * s - path) < 2.5 * half)
    return (np.maximum(tube, bar) * F32(0.6) * ~lung).astype(F32)
