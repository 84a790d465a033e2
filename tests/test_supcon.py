"""SupConLoss (vectorised) against the per-anchor loop written from the formula."""
import math

import pytest
import torch

from cxrlab.losses.supcon import SupConLoss, positive_weights
from cxrlab.methods.supcon import ProjectionHead, two_view_features
from cxrlab.losses.supcon_reference import supcon_loss_loop

NAN = float("nan")


def _labels(kind: str, B: int, C: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if kind == "none":
        return None
    if kind == "ids":
        return torch.randint(0, 3, (B,), generator=g)
    if kind == "single":  # exactly one label per row
        return torch.nn.functional.one_hot(torch.randint(0, C, (B,), generator=g), C).float()
    lab = (torch.rand(B, C, generator=g) < 0.35).float()
    if kind == "multi":
        lab[lab.sum(1) == 0, 0] = 1.0
        return lab
    if kind == "mixed":  # multi-label rows, no-label rows and NaN (not labelled) entries
        lab[0] = 0.0
        lab[1] = 0.0
        lab[2, :] = NAN
        lab[3, 1] = NAN
        return lab
    if kind == "empty":
        return torch.zeros(B, C)
    raise ValueError(kind)


CASES = [(kind, V, pos) for kind in ("single", "multi", "mixed", "empty", "ids", "none")
         for V in (1, 2, 3) for pos in ("any", "jaccard")
         if not (kind in ("ids", "none", "empty") and pos == "jaccard")]


@pytest.mark.parametrize("kind,V,positives", CASES)
def test_vectorised_equals_loop_loss_and_gradient(kind, V, positives):
    B, D = 9, 6
    torch.manual_seed(CASES.index((kind, V, positives)))
    f1 = torch.randn(B, V, D, dtype=torch.float64, requires_grad=True)
    f2 = f1.detach().clone().requires_grad_(True)
    lab = _labels(kind, B)
    loss = SupConLoss(temperature=0.1, base_temperature=0.07, positives=positives)(f1, lab)
    ref = supcon_loss_loop(f2, lab, temperature=0.1, base_temperature=0.07, positives=positives)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-12)
    loss.backward()
    ref.backward()
    assert torch.isfinite(f1.grad).all()
    torch.testing.assert_close(f1.grad, f2.grad, rtol=1e-8, atol=1e-12)


def test_jaccard_differs_from_any_when_overlap_is_partial():
    lab = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.float64)
    w = positive_weights(lab, lab, "jaccard")
    assert w[0, 1] == pytest.approx(0.5) and w[0, 2] == pytest.approx(1 / 3) and w[1, 3] == 0
    assert torch.equal(positive_weights(lab, lab, "any")[0], torch.tensor([1.0, 1, 1, 0], dtype=torch.float64))
    f = torch.randn(4, 2, 8, dtype=torch.float64)
    a, j = SupConLoss(positives="any")(f, lab), SupConLoss(positives="jaccard")(f, lab)
    assert abs(a.item() - j.item()) > 1e-6
    assert j.item() == pytest.approx(supcon_loss_loop(f, lab, positives="jaccard").item(), rel=1e-10)


def test_closed_form_two_images():
    """Views of image 0 sit on e1, of image 1 on e2, no shared label: for every anchor the
    only positive is its twin (cosine 1), the two others have cosine 0."""
    T, Tb = 0.1, 0.07
    f = torch.tensor([[[1.0, 0], [2.0, 0]], [[0, 1.0], [0, 3.0]]], dtype=torch.float64)
    lab = torch.tensor([[1.0, 0], [0, 1.0]])
    expected = -(T / Tb) * (1 / T - math.log(math.exp(1 / T) + 2))
    assert SupConLoss(T, Tb)(f, lab).item() == pytest.approx(expected, rel=1e-12)
    # sharing a label makes the other image a positive too
    both = torch.ones(2, 2)
    lp = [1 / T - math.log(math.exp(1 / T) + 2), 0 - math.log(math.exp(1 / T) + 2)]
    expected_shared = -(T / Tb) * (lp[0] + 2 * lp[1]) / 3
    assert SupConLoss(T, Tb)(f, both).item() == pytest.approx(expected_shared, rel=1e-12)


def test_no_nan_with_zero_positive_anchors_and_empty_batches():
    # one view, no label shared: every anchor has zero positives -> loss exactly 0, grad 0
    f = torch.randn(6, 1, 4, requires_grad=True)
    loss = SupConLoss()(f, torch.zeros(6, 3))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(f.grad).all() and f.grad.abs().max() == 0
    # a single image with a single view: empty contrast set, still finite
    f1 = torch.randn(1, 1, 4, requires_grad=True)
    l1 = SupConLoss()(f1, torch.ones(1, 3))
    l1.backward()
    assert l1.item() == 0.0 and torch.isfinite(f1.grad).all()
    # all-NaN labels with two views behaves like SimCLR
    f2 = torch.randn(5, 2, 4, dtype=torch.float64)
    nan_lab = torch.full((5, 3), NAN)
    assert SupConLoss()(f2, nan_lab).item() == pytest.approx(SupConLoss()(f2, None).item())
    # mean over all anchors: zero-positive anchors count in N (reference SupContrast)
    f3 = torch.randn(4, 1, 4, dtype=torch.float64)
    lab3 = torch.tensor([[1.0, 0], [1.0, 0], [0, 0], [0, 0]])
    full = SupConLoss()(f3, lab3)
    assert full.item() == pytest.approx(supcon_loss_loop(f3, lab3).item(), rel=1e-10)
    only_pairs = SupConLoss()(f3[:2], lab3[:2])  # the same two anchors, contrast set smaller
    assert full.item() != pytest.approx(only_pairs.item())


def test_gradcheck():
    f = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    lab = _labels("mixed", 5, C=4, seed=3)
    for pos in ("any", "jaccard"):
        assert torch.autograd.gradcheck(lambda x: SupConLoss(positives=pos)(x, lab), (f,))


def test_temperature_scaling_and_invariances():
    f = torch.randn(8, 2, 5, dtype=torch.float64)
    lab = _labels("multi", 8)
    base = SupConLoss(temperature=0.2, base_temperature=0.2)(f, lab)
    scaled = SupConLoss(temperature=0.2, base_temperature=0.07)(f, lab)
    assert scaled.item() == pytest.approx(base.item() * 0.2 / 0.07, rel=1e-12)
    # features are normalised inside; the order of images does not matter
    assert SupConLoss()(3.0 * f, lab).item() == pytest.approx(SupConLoss()(f, lab).item(), rel=1e-12)
    perm = torch.randperm(8)
    assert SupConLoss()(f[perm], lab[perm]).item() == pytest.approx(SupConLoss()(f, lab).item(), rel=1e-12)
    # lower temperature sharpens: with well-separated classes the loss ratio changes
    assert SupConLoss(0.05, 0.05)(f, lab).item() != pytest.approx(base.item())


def test_autocast_bf16_is_computed_in_float32():
    f = torch.randn(16, 2, 32)
    lab = _labels("multi", 16)
    ref = SupConLoss()(f, lab)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SupConLoss()(f, lab)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ref.item(), rel=1e-5)


def test_errors_are_explicit():
    loss = SupConLoss()
    with pytest.raises(ValueError, match=r"\[batch, views, dim\]"):
        loss(torch.randn(4, 8), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        loss(torch.randn(4, 2, 8), -torch.ones(4, 2))
    with pytest.raises(ValueError, match="rows"):
        loss(torch.randn(4, 2, 8), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="positives"):
        SupConLoss(positives="all")
    with pytest.raises(ValueError, match="positive"):
        SupConLoss(temperature=0)


def test_projection_head_and_two_view_features():
    head = ProjectionHead(16, out_dim=8)
    assert head.hidden == 16
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1 * 4 * 4, 16))
    views = torch.randn(3, 2, 1, 4, 4)
    z = two_view_features(enc, head, views)
    assert z.shape == (3, 2, 8)
    # one pass for all views equals encoding each view on its own
    torch.testing.assert_close(z[:, 1], head(enc(views[:, 1])))
    zn = ProjectionHead(16, 32, 8, normalize=True)(torch.randn(5, 16))
    torch.testing.assert_close(zn.norm(dim=1), torch.ones(5))
    loss = SupConLoss()(z, torch.eye(3)[:, :2])
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())


def test_chance_loss_is_the_loss_of_identical_embeddings():
    from cxrlab.losses.supcon import SupConLoss, chance_loss

    B = 16
    z = torch.ones(B, 2, 8)  # an encoder that maps everything to the same point
    labels = (torch.rand(B, 3, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    loss = SupConLoss(temperature=0.1, base_temperature=0.07, positives="any")(z, labels)
    assert abs(loss.item() - chance_loss(B)) < 1e-4
    assert abs(chance_loss(64) - 0.1 / 0.07 * math.log(127)) < 1e-9  # 6.92, notebook 03's line
