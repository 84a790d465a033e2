"""RRR and ActDiff (seed 002's masking methods): the penalty against a direct autograd
computation, the shuffle, the mask areas, resume after a kill, and bad inputs."""
import json
import os
import signal

import numpy as np
import pytest
import torch
from torch import nn

from cxrlab.engine import fit, load_checkpoint
from cxrlab.errors import CxrlabError
from cxrlab.methods import ALGORITHMS, MaskError, create_algorithm
from cxrlab.methods.actdiff import activation_distance, shuffle_outside
from cxrlab.methods.mask_guided import compute_allowed
from cxrlab.methods.rrr import rrr_penalty
from cxrlab.models import create_backbone

from tests.helpers.engine import box_masks, make_cache, make_labels, signal_images
from tests.test_engine import _line_reader, _start, _wait_for, assert_same

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- helpers
class TinyNet(nn.Module):
    """conv -> tanh -> linear: smooth, so second derivatives are not zero."""

    def __init__(self, k=1, c=2, size=8):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(c, 3, 3, padding=1)
        self.fc = nn.Linear(3 * size * size, k)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def direct_penalty(model, x, allowed, outputs):
    """Image by image, plain autograd (no double back-prop, no batching)."""
    total = 0.0
    for i in range(len(x)):
        if allowed[i].sum() == 0:
            continue
        xi = x[i:i + 1].detach().clone().requires_grad_(True)
        z = model(xi)
        logp = torch.nn.functional.logsigmoid(z) if outputs == "sigmoid" else z.log_softmax(1)
        (g,) = torch.autograd.grad(logp.sum(), xi)
        total += float((((1 - allowed[i:i + 1].float()) * g) ** 2).sum())
    return total


def mask_data(n=64, size=32, seed=0):
    y = make_labels(n, seed, nan_frac=0.0)
    lung, lesion = box_masks(y, size)
    return {"image": torch.from_numpy(signal_images(y, size, seed))[:, None],
            "labels": torch.from_numpy(y),
            "lung_mask": torch.from_numpy(lung)[:, None],
            "lesion_mask": torch.from_numpy(lesion.astype(np.int32))[:, None]}


def tiny(method, hp=None, n_labels=7):
    return create_algorithm(method, create_backbone("tiny_cnn", image_size=32, seed=0), n_labels,
                            hp, seed=0)


def quick_fit(alg, data, out, **kw):
    args = dict(epochs=1, batch_size=16, lr=3e-3, seed=1, out_dir=out, device="cpu",
                verbose=False, log_every=None)
    args.update(kw)
    return fit(alg, data, **args)


# ----------------------------------------------------------------------------- RRR
@pytest.mark.parametrize("outputs,k", [("sigmoid", 3), ("softmax", 4)])
def test_rrr_penalty_equals_direct_autograd(outputs, k):
    model = TinyNet(k=k)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, 8, 8, generator=g)
    allowed = (torch.rand(5, 1, 8, 8, generator=g) < 0.4).to(torch.uint8)
    allowed[2] = 0  # an image without a mask: no penalty
    pen = rrr_penalty(model, x, allowed, outputs=outputs)
    want = direct_penalty(model, x, allowed, outputs)
    assert want > 0
    assert pen.item() == pytest.approx(want, rel=1e-5)
    # the image without a mask adds nothing: the same as the batch without it
    keep = [0, 1, 3, 4]
    assert pen.item() == pytest.approx(rrr_penalty(model, x[keep], allowed[keep], outputs).item(),
                                       rel=1e-5)
    # the penalty trains (double back-prop reaches the weights)
    pen.backward()
    assert model.conv.weight.grad is not None and model.conv.weight.grad.abs().sum() > 0
    # an allowed region covering the image leaves nothing to penalise
    assert rrr_penalty(model, x, torch.ones_like(allowed), outputs).item() == 0.0


def test_rrr_penalty_gradient_matches_finite_difference():
    """d(penalty)/d(weight) from double back-prop agrees with a finite difference."""
    model = TinyNet(k=2).double()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    allowed = torch.zeros(3, 1, 8, 8)
    allowed[:, :, 2:6, 2:6] = 1
    pen = rrr_penalty(model, x, allowed)
    pen.backward()
    w = model.fc.weight
    i, eps = (0, 5), 1e-6
    with torch.no_grad():
        w[i] += eps
    up = rrr_penalty(model, x, allowed).item()
    with torch.no_grad():
        w[i] -= 2 * eps
    down = rrr_penalty(model, x, allowed).item()
    assert w.grad[i].item() == pytest.approx((up - down) / (2 * eps), rel=1e-4)


def test_rrr_share_is_the_outside_share_and_does_not_fall_when_logits_shrink():
    """scale="share": per image, outside energy / total energy of the squared input gradient,
    averaged over the images with a mask; unchanged when the logits are scaled down, where the
    reference's sum falls with the square of the scale (the cheap way out the sum leaves)."""
    model = TinyNet(k=1).double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64, generator=g)
    allowed = (torch.rand(4, 1, 8, 8, generator=g) < 0.5).double()
    allowed[1] = 0  # no mask: left out of the mean
    want = []
    for i in (0, 2, 3):
        xi = x[i:i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(torch.nn.functional.logsigmoid(model(xi)).sum(), xi)
        want.append(float((((1 - allowed[i]) * gi) ** 2).sum() / (gi ** 2).sum()))
    share = rrr_penalty(model, x, allowed, outputs="sigmoid", scale="share")
    assert share.item() == pytest.approx(np.mean(want), rel=1e-6)
    assert 0 < share.item() < 1
    share.backward()  # trains: double back-prop reaches the weights
    assert model.conv.weight.grad.abs().sum() > 0

    class Scaled(nn.Module):
        def __init__(self, net, c):
            super().__init__()
            self.net, self.c = net, c

        def forward(self, x):
            return self.c * self.net(x)

    small = Scaled(model, 0.01)
    for outputs in ("sigmoid", "both"):
        s_full = rrr_penalty(model, x, allowed, outputs=outputs, scale="share").item()
        s_small = rrr_penalty(small, x, allowed, outputs=outputs, scale="share").item()
        assert s_small == pytest.approx(s_full, rel=1e-6)  # single label: the output factor cancels
        assert rrr_penalty(small, x, allowed, outputs=outputs).item() < \
            1e-3 * rrr_penalty(model, x, allowed, outputs=outputs).item()
    with pytest.raises(MaskError, match="scale must be one of"):
        rrr_penalty(model, x, allowed, scale="mean")


def test_rrr_trains_a_vit_whose_attention_needs_a_second_derivative(tmp_path):
    """Fused attention kernels have no double backward; RRR must still train a ViT."""
    bb = create_backbone("tiny_vit", image_size=32, seed=0)
    net = nn.Sequential(bb, nn.Linear(bb.num_features, 1))
    x = torch.randn(2, 1, 32, 32)
    allowed = torch.zeros(2, 1, 32, 32)
    allowed[:, :, 8:24, 8:24] = 1
    rrr_penalty(net, x, allowed).backward()  # backward outside the forward's context
    assert bb.model.patch_embed.proj.weight.grad.abs().sum() > 0
    alg = create_algorithm("rrr", create_backbone("tiny_vit", image_size=32, seed=0), 7,
                           {"lam": 1.0, "mask": "lung"}, seed=0)
    res = quick_fit(alg, mask_data(32), tmp_path, epochs=1)
    assert res.history[0]["penalty"] > 0 and np.isfinite(res.history[0]["loss"])


def test_rrr_with_lambda_zero_is_the_bce_finetune():
    """lam = 0 is ERM: the same weights as bce_finetune without augmentation."""
    data = mask_data(32)
    a = tiny("rrr", {"lam": 0.0, "mask": "lung"})
    b = tiny("bce_finetune", {"augment": "none", "backbone_lr_scale": 1.0})
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        quick_fit(a, data, f"{d}/a")
        quick_fit(b, {k: data[k] for k in ("image", "labels")}, f"{d}/b")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_rrr_penalty_falls_during_training(tmp_path):
    data = mask_data(64)
    res = quick_fit(tiny("rrr", {"lam": 1.0, "mask": "lung_periphery"}), data, tmp_path, epochs=4)
    pens = [h["penalty"] for h in res.history]
    assert pens[-1] < pens[0], pens
    assert res.history[0]["masked_frac"] == 1.0  # every image has lungs


# ----------------------------------------------------------------------------- ActDiff
def test_shuffle_outside_keeps_inside_and_permutes_outside_within_each_image():
    B, H, W = 4, 12, 12
    x = torch.arange(B * H * W, dtype=torch.float32).reshape(B, 1, H, W)
    x = torch.cat([x, x + 0.5], 1)  # two channels: a pixel's channels move together
    allowed = torch.zeros(B, 1, H, W, dtype=torch.uint8)
    allowed[:, :, 3:9, 4:10] = 1
    allowed[1] = 1  # nothing outside: unchanged
    allowed[2] = 0  # nothing inside: everything shuffled
    out = shuffle_outside(x, allowed, generator=torch.Generator().manual_seed(0))
    inside = allowed.bool().expand_as(x)
    assert torch.equal(out[inside], x[inside])
    for i in range(B):
        o = ~allowed[i, 0].bool()
        a, b = x[i, 0][o], out[i, 0][o]
        assert torch.equal(torch.sort(a).values, torch.sort(b).values)  # same image's pixels
        assert torch.equal(out[i, 1][o], b + 0.5)
        if o.sum() > 10:
            assert (a != b).float().mean() > 0.8  # really permuted
    assert torch.equal(out[1], x[1])
    # reproducible from a generator, different from another seed
    again = shuffle_outside(x, allowed, generator=torch.Generator().manual_seed(0))
    other = shuffle_outside(x, allowed, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_shuffle_outside_is_differentiable():
    x = torch.randn(2, 1, 6, 6, requires_grad=True)
    allowed = torch.zeros(2, 6, 6)
    allowed[:, :3] = 1
    (shuffle_outside(x, allowed) * torch.arange(36.).reshape(6, 6)).sum().backward()
    # every pixel lands somewhere once: the gradient is a permutation of the weights
    assert torch.equal(torch.sort(x.grad[0].flatten()).values, torch.arange(36.))


def test_activation_distance_l2_and_reference():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    want = torch.linalg.vector_norm(a - b, dim=1).mean()
    assert activation_distance(a, b).item() == pytest.approx(want.item(), rel=1e-6)
    ref = torch.nn.PairwiseDistance(p=2)(a, b).mean()  # the reference's module, pooled features
    assert activation_distance(a, b, distance="reference").item() == pytest.approx(ref.item(), rel=1e-6)
    m1, m2 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ref_map = torch.nn.PairwiseDistance(p=2)(m1, m2).mean()
    assert activation_distance(m1, m2, distance="reference").item() == pytest.approx(ref_map.item(), rel=1e-6)
    whole = torch.linalg.vector_norm((m1 - m2).flatten(1), dim=1).mean()
    assert activation_distance(m1, m2).item() == pytest.approx(whole.item(), rel=1e-6)
    assert whole.item() != pytest.approx(ref_map.item(), rel=0.1)  # the two really differ


def test_activation_distance_batch_scale_ignores_scaling_and_offsets():
    """scale="batch": the distance in units of the batch's spread of the activations, so
    shrinking every activation or adding a constant to them does not lower it."""
    g = torch.Generator().manual_seed(4)
    a = torch.randn(6, 5, generator=g)
    b = a + 0.1 * torch.randn(6, 5, generator=g)
    base = activation_distance(a, b, scale="batch").item()
    spread = torch.sqrt(((a - a.mean(0)) ** 2).sum(1).mean())
    assert base == pytest.approx(activation_distance(a, b).item() / spread.item(), rel=1e-5)
    assert activation_distance(0.01 * a, 0.01 * b, scale="batch").item() == pytest.approx(base, rel=1e-4)
    assert activation_distance(a + 7, b + 7, scale="batch").item() == pytest.approx(base, rel=1e-4)
    assert activation_distance(0.01 * a, 0.01 * b).item() == pytest.approx(
        0.01 * activation_distance(a, b).item(), rel=1e-4)  # the plain distance does fall
    with pytest.raises(MaskError, match="scale must be one of"):
        activation_distance(a, b, scale="max")
    with pytest.raises(MaskError, match="scale must be one of"):
        tiny("actdiff", {"scale": "max"})
    with pytest.raises(MaskError, match="scale must be one of"):
        tiny("rrr", {"scale": "mean"})


def test_actdiff_trains_with_pooled_and_intermediate_layers(tmp_path):
    data = mask_data(48)
    for i, hp in enumerate([{"mask": "abnormality"},
                            {"mask": "lung_periphery", "layers": ["features.1", "pooled"]}]):
        res = quick_fit(tiny("actdiff", hp), data, tmp_path / str(i), epochs=2)
        assert res.history[0]["penalty"] > 0
        assert np.isfinite(res.history[-1]["loss"])
    assert 0 < res.history[0]["masked_frac"] <= 1


# ----------------------------------------------------------------------------- masks
def test_mask_areas_on_the_synthetic_hospitals():
    from cxrlab.data.synthetic import generate
    from cxrlab.labels import NIH14

    b = generate("source", 64, 64, seed=0, prevalence_factor={"Pneumothorax": 5})
    k = NIH14.index("Pneumothorax")
    pos = b.labels[:, k] > 0
    assert pos.sum() >= 5
    lung = compute_allowed("lung", b.lung_masks[:, None])
    per = compute_allowed("lung_periphery", b.lung_masks[:, None])
    ab = compute_allowed("abnormality", lesion=b.lesion_masks[:, None])
    sc = compute_allowed("scaled_abnormality", lesion=b.lesion_masks[:, None])
    assert np.array_equal(lung, b.lung_masks)
    assert (per <= lung).all()  # the periphery is part of the lung ...
    frac = per.sum((1, 2)) / lung.sum((1, 2))
    assert 0.3 < frac.mean() < 0.9, frac.mean()  # ... and neither all of it nor a sliver
    assert np.array_equal(ab != 0, (b.lesion_masks >> k) & 1 != 0)
    assert (sc >= ab).all() and sc.sum() > 1.5 * ab.sum()  # scaled covers more
    # only pneumothorax images have an abnormality mask (negatives: no mask, no penalty)
    has = ab.reshape(len(ab), -1).any(1)
    assert has[~pos].sum() <= (b.severity[~pos, k] > 0).sum()  # borderline: drawn, not labelled
    assert has[pos].mean() > 0.9


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize("method,hp", [("rrr", {"lam": 0.1, "mask": "lung_periphery"}),
                                       ("actdiff", {"lam": 0.5, "mask": "abnormality"})])
def test_masking_methods_resume_after_sigkill(tmp_path, method, hp):
    """As tests/test_engine.py for BCE: a process killed in epoch 3 of 3 resumes from the
    epoch-2 checkpoint and ends bit-identical to a run never stopped."""
    from tests.scripts.train_tiny import run

    cache = make_cache(tmp_path / "cache", masks=True)
    common = ["--cache", str(cache.path), "--epochs", "3", "--method", method,
              "--hparams", json.dumps(hp)]
    victim = _start(common + ["--slow-from", "3"], tmp_path / "killed")
    seen: list[str] = []
    try:
        q = _line_reader(victim)
        _wait_for(q, lambda s: s == "EPOCH_DONE 2", seen)
        _wait_for(q, lambda s: s.startswith("STEP 3 "), seen)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 2
    resumed = _start(common, tmp_path / "killed")
    ref = run(cache.path, tmp_path / "ref", epochs=3, say=lambda s: None, method=method,
              hparams=hp)
    out, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, out
    assert "RESUMED_FROM 2" in out
    a = load_checkpoint(tmp_path / "ref" / "last.pt")
    b = load_checkpoint(tmp_path / "killed" / "last.pt")
    for key in ("model", "optimizer", "history", "config_hash"):
        assert_same(a[key], b[key], key)
    assert a["history"][0]["penalty"] > 0 and a["config"]["algorithm"] == method


# ----------------------------------------------------------------------------- bad input
def test_registry_and_study_attributes():
    for name, display in (("rrr", "RRR"), ("actdiff", "ActDiff")):
        cls = ALGORITHMS[name]
        assert cls.display_name == display and cls.scoring == "predict"
        assert set(cls.needs) == {"lung_mask", "lesion_mask"}
        assert {"lam", "mask"} <= set(cls.HPARAMS)


@pytest.mark.parametrize("method", ["rrr", "actdiff"])
def test_bad_hyper_parameters_fail_at_construction(method):
    with pytest.raises(MaskError, match="lam must be a finite number >= 0"):
        tiny(method, {"lam": -1.0})
    with pytest.raises(MaskError, match="choose one of"):
        tiny(method, {"mask": "heart"})
    with pytest.raises(MaskError, match="NIH14 label"):
        tiny(method, {"lesion_label": "Pneumothorax "})
    assert issubclass(MaskError, CxrlabError) and issubclass(MaskError, ValueError)


def test_actdiff_unknown_layer_names_the_close_ones():
    with pytest.raises(MaskError, match="unknown layer.*features.1"):
        tiny("actdiff", {"layers": ["features.9"]})


@pytest.mark.parametrize("method", ["rrr", "actdiff"])
def test_bad_masks_fail_before_the_first_step(tmp_path, method):
    data = mask_data(32)

    def fails(d, match, **hp):
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        with pytest.raises(MaskError, match=match):
            quick_fit(tiny(method, {"mask": "lung_periphery", **hp}), d, out)
        assert not (out / "last.pt").exists()  # nothing trained

    wrong = dict(data, lung_mask=data["lung_mask"][:, :, :16])
    fails(wrong, r"lung_mask has shape \(32, 1, 16, 32\) but the images are")
    empty = dict(data, lung_mask=data["lung_mask"].clone())
    empty["lung_mask"][[3, 7]] = 0
    fails(empty, r"2 of 32 images have an empty lung mask \(rows \[3, 7\]")
    no_lung = {k: v for k, v in data.items() if k != "lung_mask"}
    fails(no_lung, "needs lung masks but the training data carry none")
    no_lesion = {k: v for k, v in data.items() if k != "lesion_mask"}
    fails(no_lesion, "needs lesion masks", mask="abnormality")
    fails(data, "no training image has a abnormality mask", mask="abnormality",
          lesion_label="Hernia")
    # missing_lung='skip' trains those two images without a penalty instead
    res = quick_fit(tiny(method, {"mask": "lung_periphery", "missing_lung": "skip"}), empty,
                    tmp_path / "skip")
    assert res.history[0]["masked_frac"] < 1.0


def test_cache_dataset_masks_are_checked_and_looked_up(tmp_path):
    """Training from a cache: prepare_data reads the whole set's masks once; the steps look
    rows up (same penalty as computing every batch afresh)."""
    from cxrlab.data.dataset import CacheDataset
    from cxrlab.engine.batching import as_batches, collate_dict

    cache = make_cache(tmp_path / "cache", masks=True)
    rows = cache.select("train")
    with pytest.raises(MaskError, match="needs lung masks"):
        quick_fit(tiny("rrr"), CacheDataset(cache, rows, "shared7"), tmp_path / "nomask")
    ds = CacheDataset(cache, rows, "shared7", with_masks=True)
    alg = tiny("rrr", {"mask": "lung_periphery"})
    alg.prepare_data(as_batches(ds))
    batch = collate_dict([ds[i] for i in range(8)])
    looked_up = alg.allowed_regions(batch)
    alg._table = None
    fresh = alg.allowed_regions(batch)
    assert torch.equal(looked_up, fresh) and looked_up.sum() > 0
    # a stale table (other masks under the same rows) is not used
    alg.prepare_data(as_batches(ds))
    batch["lung_mask"] = torch.zeros_like(batch["lung_mask"])
    batch["lung_mask"][:, :, 4:28, 4:28] = 1
    assert not torch.equal(alg.allowed_regions(batch), looked_up)


# ----------------------------------------------------------------------------- bench
def test_bench_reports_step_overhead_ratios():
    from cxrlab.bench import GROUPS
    from cxrlab.bench.masking import run

    assert GROUPS["masking"] == "cxrlab.bench.masking"
    out = run(quick=True)
    for key in ("rrr_step_overhead_ratio", "actdiff_step_overhead_ratio"):
        assert out[key] > 1.0, out  # both do more work than an ERM step: a real measurement
    assert out["rrr_step_ms"] == pytest.approx(out["erm_step_ms"] * out["rrr_step_overhead_ratio"],
                                               rel=0.02)


# ----------------------------------------------------------------------------- SIIM lungs
def _real_cache(path, images, lung=None, ids=None):
    import pandas as pd

    from cxrlab.data.cache import CacheWriter

    n, s = images.shape[0], images.shape[-1]
    w = CacheWriter(path, n, s, lung_masks=lung is not None)
    if lung is None:
        w.write(0, images)
    else:
        w.write(0, images, lung_masks=lung)
    man = pd.DataFrame({"image_id": ids or [f"i{i}" for i in range(n)],
                        "patient_id": [f"p{i}" for i in range(n)], "split": "train",
                        "domain": "d", "age": 50.0, "sex": "F", "view": "PA", "path": "",
                        "Pneumothorax": 0.0})
    return w.finalize(man, meta={"synthetic": False})


def test_siim_lung_masks_come_from_their_nih_duplicates(tmp_path):
    """SIIM images are NIH images under other names: matched by content (brightness and
    contrast changed), they take the NIH image's CheXmask lung mask; unmatched ones get none."""
    from cxrlab.data.cache import open_cache
    from cxrlab.data.chexmask import lung_masks_from_duplicates
    from cxrlab.data.synthetic import generate

    nih = generate("target_nih", 24, 64, seed=3)
    lung = nih.lung_masks.copy()
    lung[5] = 0  # an NIH image without a usable CheXmask mask
    donor = _real_cache(tmp_path / "nih", nih.images, lung)
    pick = [2, 5, 11, 17]
    other = generate("target_old", 2, 64, seed=4).images
    siim_imgs = np.concatenate([np.clip(nih.images[pick].astype(float) * 0.8 + 30, 0, 255)
                                .astype(np.uint8), other])
    _real_cache(tmp_path / "siim", siim_imgs, ids=[f"1.2.276.{i}" for i in range(6)])
    report = lung_masks_from_duplicates(tmp_path / "siim", donor)
    assert report == {"n": 6, "with_mask": 3, "no_match": 2, "donor_without_mask": 1}
    siim = open_cache(tmp_path / "siim")
    for i, r in enumerate(pick):
        assert np.array_equal(siim.lung_masks[i], lung[r])
    assert siim.manifest["has_lung_mask"].tolist() == [1, 0, 1, 1, 0, 0]
    assert siim.meta["lung_masks_missing"] == 3
    with pytest.raises(FileExistsError, match="already has lung masks"):
        lung_masks_from_duplicates(tmp_path / "siim", donor)


def test_any_dataset_of_tuples_with_masks_trains(tmp_path):
    """A plain torch Dataset whose items carry the masks (ITEM_KEYS order) is read once by
    prepare_data; without the mask field it is refused before training."""
    from torch.utils.data import Dataset

    data = mask_data(32)

    class Items(Dataset):
        def __init__(self, n_fields):
            self.n_fields = n_fields

        def __len__(self):
            return 32

        def __getitem__(self, i):
            return (data["image"][i], data["labels"][i], i, data["lung_mask"][i],
                    data["lesion_mask"][i])[:self.n_fields]

    res = quick_fit(tiny("rrr", {"mask": "lung_periphery"}), Items(5), tmp_path / "a")
    assert res.history[0]["penalty"] > 0
    with pytest.raises(MaskError, match="needs lung masks"):
        quick_fit(tiny("rrr", {"mask": "lung_periphery"}), Items(3), tmp_path / "b")
