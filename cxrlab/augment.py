"""Chest X-ray augmentations for contrastive training: batched, on the device, seeded.

What a "view" of a radiograph may change, and why
-------------------------------------------------
Two views of one image should differ in what changes between hospitals and acquisitions,
and agree in the anatomy and the findings:

* **Geometry** -- a random resized crop (keeps 70-100 % of the area, mild aspect change),
  a small rotation (+-10 degrees) and a small shift: patient positioning and collimation
  vary, but a radiograph is never upside down or cropped to a corner.
* **Intensity** -- brightness, contrast and gamma jitter simulate exposure and the
  detector's contrast curve (the main image shift between sites); Gaussian noise simulates
  low dose / older detectors; a mild blur simulates lower resolution.

**No horizontal flip by default.** Chest anatomy is lateralised: the heart and aortic knob
sit on the left, the liver and the higher hemidiaphragm on the right, and burned-in
laterality markers ("L"/"R") say which side is which. A flipped CXR is an image of
situs inversus / dextrocardia that the data set does not contain; teaching the encoder to
treat it as the same image asks for invariance to the very cue that separates, e.g.,
cardiomegaly from a right-sided mass, and it fabricates a rare pathology. (Flips are
standard for natural images, which have no such left-right semantics.) ``hflip=True``
exists to run that ablation, not as a default.

Interface
---------
``aug = cxr_train_augment(image_size, strength="default")`` returns a :class:`CXRAugment`
module. ``aug(x)`` takes ``[B, 1, H, W]`` (or one ``[1, H, W]`` image) as uint8 or as float
in [0, 1] on any device and returns the same dtype at ``image_size``; every sample gets its
own random parameters, drawn from ``generator=`` when given (reproducible tests) or from
torch's global RNG. ``two_views(x)`` / :class:`TwoViewTransform` give ``[B, 2, 1, S, S]``
for :class:`~cxrlab.losses.supcon.SupConLoss`. Everything is a handful of batched torch ops
(one ``grid_sample`` for all geometry, one grouped convolution for the blur), so it runs on
the GPU next to the model instead of in DataLoader workers.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AugmentConfig", "STRENGTHS", "CXRAugment", "TwoViewTransform", "cxr_train_augment",
           "two_views"]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of every random parameter. Zero ranges / probabilities switch an op off."""

    crop_scale: tuple[float, float] = (0.7, 1.0)  # fraction of the image area kept
    crop_ratio: tuple[float, float] = (0.9, 1.0 / 0.9)  # width / height of the crop
    rotate_deg: float = 10.0  # uniform in [-rotate_deg, +rotate_deg]
    translate: float = 0.05  # extra shift, fraction of the image size
    brightness: float = 0.1  # additive, uniform in [-b, +b] (intensities in [0, 1])
    contrast: float = 0.2  # multiplicative around the image mean, in [1-c, 1+c]
    gamma: float = 0.25  # exponent exp(U[-log(1+g), log(1+g)])
    noise_std: float = 0.03  # Gaussian noise, sd uniform in [0, noise_std]
    blur_p: float = 0.3  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 1.0)  # in pixels of the output
    hflip: bool = False  # see the module docstring: off for radiographs
    hflip_p: float = 0.5  # used only when hflip=True


#: presets for ``strength=``
STRENGTHS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), rotate_deg=0.0,
                          translate=0.0, brightness=0.0, contrast=0.0, gamma=0.0,
                          noise_std=0.0, blur_p=0.0),
    "light": AugmentConfig(crop_scale=(0.85, 1.0), rotate_deg=5.0, translate=0.03,
                           brightness=0.05, contrast=0.1, gamma=0.1, noise_std=0.01, blur_p=0.1),
    "default": AugmentConfig(),
    "strong": AugmentConfig(crop_scale=(0.5, 1.0), crop_ratio=(0.8, 1.25), rotate_deg=15.0,
                            translate=0.08, brightness=0.2, contrast=0.35, gamma=0.4,
                            noise_std=0.06, blur_p=0.5, blur_sigma=(0.1, 1.5)),
}


def _uniform(n: int, lo: float, hi: float, generator, device) -> torch.Tensor:
    """n uniform draws in [lo, hi] (drawn on the generator's device, moved to ``device``)."""
    gdev = generator.device if generator is not None else device
    u = torch.rand(n, generator=generator, device=gdev)
    return (lo + (hi - lo) * u).to(device)


class CXRAugment(nn.Module):
    """Random CXR augmentation of a batch; see the module docstring. Has no parameters.

    ``forward(x, generator=None)``: ``x`` uint8 or float [B,1,H,W] (or [1,H,W]); returns the
    same dtype, [B,1,S,S] with S = ``image_size`` (default: the input size).
    """

    def __init__(self, image_size: int | None = None, config: AugmentConfig | None = None):
        super().__init__()
        self.image_size = None if image_size is None else int(image_size)
        self.config = config or AugmentConfig()

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, config={asdict(self.config)}"

    # -------------------------------------------------------------------------- geometry
    def _affine(self, B: int, generator, device) -> torch.Tensor:
        c = self.config
        scale = _uniform(B, *c.crop_scale, generator, device)
        logr = _uniform(B, math.log(c.crop_ratio[0]), math.log(c.crop_ratio[1]), generator, device)
        ratio = torch.exp(logr)
        sw = torch.sqrt(scale * ratio).clamp(max=1.0)  # crop width, fraction of the input
        sh = torch.sqrt(scale / ratio).clamp(max=1.0)
        # crop centre anywhere that keeps the crop inside the image, plus a small extra shift
        cx = _uniform(B, -1.0, 1.0, generator, device) * (1 - sw) \
            + _uniform(B, -2 * c.translate, 2 * c.translate, generator, device)
        cy = _uniform(B, -1.0, 1.0, generator, device) * (1 - sh) \
            + _uniform(B, -2 * c.translate, 2 * c.translate, generator, device)
        ang = _uniform(B, -c.rotate_deg, c.rotate_deg, generator, device) * (math.pi / 180)
        cos, sin = torch.cos(ang), torch.sin(ang)
        if c.hflip:
            flip = _uniform(B, 0.0, 1.0, generator, device) < c.hflip_p
            sx = torch.where(flip, -sw, sw)
        else:
            sx = sw
        # output grid (normalised coords) -> input coords: rotation @ diag(crop size) + centre
        theta = torch.stack([torch.stack([cos * sx, -sin * sh, cx], -1),
                             torch.stack([sin * sx, cos * sh, cy], -1)], 1)
        return theta  # [B, 2, 3]

    # ------------------------------------------------------------------------- intensity
    def _intensity(self, x: torch.Tensor, generator) -> torch.Tensor:
        c = self.config
        B, dev = x.shape[0], x.device
        shape = (B, 1, 1, 1)
        if c.gamma > 0:
            g = math.log1p(c.gamma)
            gam = torch.exp(_uniform(B, -g, g, generator, dev)).view(shape)
            x = x.clamp_min(1e-6) ** gam
        if c.contrast > 0:
            k = _uniform(B, 1 - c.contrast, 1 + c.contrast, generator, dev).view(shape)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * k + mean
        if c.brightness > 0:
            x = x + _uniform(B, -c.brightness, c.brightness, generator, dev).view(shape)
        if c.blur_p > 0:
            x = self._blur(x, generator)
        if c.noise_std > 0:
            sd = _uniform(B, 0.0, c.noise_std, generator, dev).view(shape)
            gdev = generator.device if generator is not None else dev
            noise = torch.randn(x.shape, generator=generator, device=gdev, dtype=x.dtype).to(dev)
            x = x + sd * noise
        return x.clamp(0.0, 1.0)

    def _blur(self, x: torch.Tensor, generator) -> torch.Tensor:
        """Per-sample Gaussian blur: a separable grouped convolution, one kernel per image
        (sigma ~ 0 for the images that are not blurred)."""
        c = self.config
        B, C, H, W = x.shape
        dev = x.device
        on = _uniform(B, 0.0, 1.0, generator, dev) < c.blur_p
        sigma = _uniform(B, *c.blur_sigma, generator, dev)
        sigma = torch.where(on, sigma, torch.full_like(sigma, 1e-3))
        radius = max(1, int(math.ceil(3 * c.blur_sigma[1])))
        r = torch.arange(-radius, radius + 1, device=dev, dtype=x.dtype)
        k = torch.exp(-0.5 * (r[None, :] / sigma[:, None].to(x.dtype)) ** 2)
        k = k / k.sum(1, keepdim=True)  # [B, 2r+1]
        y = x.reshape(1, B * C, H, W)
        kb = k.repeat_interleave(C, 0)
        y = F.pad(y, (radius, radius, radius, radius), mode="replicate")
        y = F.conv2d(y, kb.view(B * C, 1, 1, -1), groups=B * C)
        y = F.conv2d(y, kb.view(B * C, 1, -1, 1), groups=B * C)
        return y.reshape(B, C, H, W)

    # --------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not torch.is_tensor(x):
            raise TypeError(f"expected a torch tensor, got {type(x).__name__}")
        single = x.dim() == 3
        if single:
            x = x[None]
        if x.dim() != 4:
            raise ValueError(f"expected images [B, C, H, W] or [C, H, W]; got shape {tuple(x.shape)}")
        in_dtype = x.dtype
        if in_dtype == torch.uint8:
            xf = x.float() / 255.0
        elif x.is_floating_point():
            xf = x.float()
        else:
            raise TypeError(f"images must be uint8 or float in [0, 1]; got {in_dtype}")
        B, C, H, W = xf.shape
        S = self.image_size or H
        theta = self._affine(B, generator, xf.device)
        grid = F.affine_grid(theta, [B, C, S, S], align_corners=False)
        # outside the image -> 0 (black), like collimation borders on real radiographs
        xf = F.grid_sample(xf, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        xf = self._intensity(xf, generator)
        if in_dtype == torch.uint8:
            out = (xf * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        else:
            out = xf.to(in_dtype)
        return out[0] if single else out


class TwoViewTransform(nn.Module):
    """``[B,1,H,W] -> [B, n_views, 1, S, S]``: independent augmentations of every image."""

    def __init__(self, augment: CXRAugment, n_views: int = 2):
        super().__init__()
        if n_views < 1:
            raise ValueError(f"n_views must be >= 1, got {n_views}")
        self.augment = augment
        self.n_views = int(n_views)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() == 3:
            return self.forward(x[None], generator)[0]
        B = x.shape[0]
        # one call on the repeated batch: per-sample parameters make the views independent
        rep = x.repeat_interleave(self.n_views, 0)
        out = self.augment(rep, generator)
        return out.reshape(B, self.n_views, *out.shape[1:])


def cxr_train_augment(image_size: int | None = None, strength: str = "default",
                      hflip: bool = False, **overrides) -> CXRAugment:
    """The course's training augmentation. ``strength`` in :data:`STRENGTHS`; keyword
    ``overrides`` change single ranges (e.g. ``rotate_deg=0``). ``hflip`` stays off for
    radiographs unless an ablation asks for it (module docstring)."""
    if strength not in STRENGTHS:
        raise ValueError(f"strength={strength!r}; choose one of {list(STRENGTHS)}")
    try:
        cfg = replace(STRENGTHS[strength], hflip=bool(hflip), **overrides)
    except TypeError as e:
        fields = list(AugmentConfig.__dataclass_fields__)
        raise TypeError(f"unknown augmentation setting in {sorted(overrides)}; known: {fields}") from e
    return CXRAugment(image_size, cfg)


def two_views(x: torch.Tensor, image_size: int | None = None, strength: str = "default",
              generator: torch.Generator | None = None, n_views: int = 2) -> torch.Tensor:
    """Shortcut: ``TwoViewTransform(cxr_train_augment(image_size, strength), n_views)(x)``."""
    return TwoViewTransform(cxr_train_augment(image_size, strength), n_views)(x, generator)
