"""Batched CXR augmentations: shapes, dtypes, seeding, identity at zero strength, no flips."""
import pytest
import torch

from cxrlab.augment import (
    STRENGTHS,
    AugmentConfig,
    CXRAugment,
    TwoViewTransform,
    cxr_train_augment,
    two_views,
)


def _phantom(B=6, S=48):
    """Smooth images with a left/right asymmetry (a bright 'heart' on the image right)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, S), torch.linspace(-1, 1, S), indexing="ij")
    img = 0.2 + 0.3 * (((xx + 0.45) ** 2 / 0.08 + yy ** 2 / 0.4) < 1).float()
    img = img + 0.5 * (((xx - 0.35) ** 2 + (yy - 0.3) ** 2) < 0.12).float()
    img = (img.clamp(0, 1) * 255).to(torch.uint8)
    return img[None, None].repeat(B, 1, 1, 1)


def test_identity_when_everything_is_off():
    x = _phantom()
    aug = cxr_train_augment(strength="none")
    assert torch.equal(aug(x), x)
    xf = x.float() / 255
    torch.testing.assert_close(aug(xf), xf, atol=1e-5, rtol=0)


def test_shapes_dtypes_and_resizing():
    x = _phantom(B=4, S=40)
    out = cxr_train_augment(32)(x)
    assert out.shape == (4, 1, 32, 32) and out.dtype == torch.uint8
    outf = cxr_train_augment(32)(x.float() / 255)
    assert outf.dtype == torch.float32 and 0 <= outf.min() and outf.max() <= 1
    single = cxr_train_augment(24)(x[0])
    assert single.shape == (1, 24, 24)
    v = two_views(x, image_size=32)
    assert v.shape == (4, 2, 1, 32, 32) and v.dtype == torch.uint8
    assert TwoViewTransform(cxr_train_augment(), n_views=3)(x).shape == (4, 3, 1, 40, 40)


def test_seeded_reproducible_and_views_differ():
    x = _phantom()
    a = two_views(x, generator=torch.Generator().manual_seed(0))
    b = two_views(x, generator=torch.Generator().manual_seed(0))
    c = two_views(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the two views of one image differ, and so do the same image's views across the batch
    assert (a[:, 0].float() - a[:, 1].float()).abs().mean() > 1
    assert (a[0, 0].float() - a[1, 0].float()).abs().mean() > 1
    # yet a view is still the same picture: closer to its source than to a flipped source
    src = x.float()
    mild = cxr_train_augment(strength="light")(x, torch.Generator().manual_seed(2)).float()
    assert (mild - src).abs().mean() < (mild - src.flip(-1)).abs().mean()


def test_no_horizontal_flip_by_default_and_flip_is_an_explicit_option():
    assert AugmentConfig().hflip is False
    assert all(not cfg.hflip for cfg in STRENGTHS.values())
    x = _phantom()
    flipped = cxr_train_augment(strength="none", hflip=True, hflip_p=1.0)(x)
    assert torch.equal(flipped, x.flip(-1))
    # geometry only, many draws: the bright right-side blob stays on the right every time
    geo = cxr_train_augment(strength="none", crop_scale=(0.7, 1.0), rotate_deg=10.0,
                            translate=0.05)
    S = 48
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, S), torch.linspace(-1, 1, S), indexing="ij")
    blob = ((((xx - 0.5) ** 2 + yy ** 2) < 0.09).float() * 200 + 30).to(torch.uint8)
    out = geo(blob[None, None].repeat(64, 1, 1, 1), torch.Generator().manual_seed(3)).float()
    half = out.shape[-1] // 2
    right = out[..., half:].mean(dim=(1, 2, 3))
    left = out[..., :half].mean(dim=(1, 2, 3))
    assert (right > left).all()


def test_intensity_jitter_changes_exposure_per_sample():
    x = _phantom(B=32)
    aug = cxr_train_augment(strength="none", brightness=0.1, contrast=0.2, gamma=0.25)
    out = aug(x, torch.Generator().manual_seed(4)).float()
    means = out.mean(dim=(1, 2, 3))
    assert means.std() > 1.0  # per-sample parameters, not one draw for the whole batch
    noisy = cxr_train_augment(strength="none", noise_std=0.05)(x, torch.Generator().manual_seed(5))
    assert (noisy.float() - x.float()).std() > 1.0
    blurred = cxr_train_augment(strength="none", blur_p=1.0, blur_sigma=(1.0, 1.0))(x)
    # a blur spreads sharp edges: less gradient energy (sum of squared neighbour differences)
    energy = lambda t: (t.float().diff(dim=-1) ** 2).mean()  # noqa: E731
    assert energy(blurred) < 0.6 * energy(x)


def test_errors_are_explicit():
    with pytest.raises(ValueError, match="strength"):
        cxr_train_augment(strength="extreme")
    with pytest.raises(TypeError, match="known"):
        cxr_train_augment(rotation=5)
    with pytest.raises(TypeError, match="uint8 or float"):
        CXRAugment()(torch.zeros(2, 1, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="shape"):
        CXRAugment()(torch.zeros(8, 8))
