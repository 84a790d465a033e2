"""The training methods behind one interface: each learns, budgets match, errors help."""
import pytest
import torch

from cxrlab.engine import fit
from cxrlab.methods import HParamError, create_algorithm, get_algorithm
from cxrlab.methods.supcon import PretrainOnlyError
from cxrlab.models import create_backbone

from tests.helpers.engine import signal_images, tensor_data

pytestmark = pytest.mark.usefixtures("one_thread")


def alg(name, hparams=None, n_labels=7):
    return create_algorithm(name, create_backbone("tiny_cnn", image_size=32, seed=0), n_labels,
                            hparams, seed=0)


@pytest.mark.parametrize("name,hparams,lr", [
    ("bce_probe", None, 3e-2),
    ("bce_finetune", {"augment": "none"}, 1e-2),
    ("supcon", {"augment": "none"}, 1e-2),
])
def test_each_method_lowers_its_loss_on_a_fixed_batch(name, hparams, lr):
    a = alg(name, hparams).train()
    imgs, y = tensor_data(32)
    batch = {"image": imgs, "labels": y, "row": torch.arange(32)}
    opt = torch.optim.Adam(a.param_groups(lr))
    losses = []
    for step in range(15):
        loss = a.training_step(batch, step)["loss"]
        assert loss.dim() == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses


def test_same_budget_probe_frozen_finetune_and_supcon_train_the_backbone(tmp_path):
    """Seed 000's confound, removed: BCE fine-tune and SupCon get the same steps and images;
    the probe's backbone (weights *and* batch-norm statistics) does not move at all."""
    data = tensor_data(48)
    results, moved = {}, {}
    for name in ("bce_probe", "bce_finetune", "supcon"):
        a = alg(name)
        before = a.backbone.fingerprint()
        results[name] = fit(a, data, epochs=2, batch_size=16, lr=1e-3, seed=0,
                            out_dir=tmp_path / name, device="cpu", verbose=False)
        moved[name] = a.backbone.fingerprint() != before
    assert {r.global_step for r in results.values()} == {6}
    assert {r.images_seen for r in results.values()} == {96}
    assert moved == {"bce_probe": False, "bce_finetune": True, "supcon": True}


def test_finetune_backbone_learns_at_a_smaller_rate():
    a = alg("bce_finetune", {"backbone_lr_scale": 0.1})
    groups = a.param_groups(1e-3)
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3])
    n_bb = sum(p.numel() for p in a.backbone.parameters())
    assert sum(p.numel() for p in groups[0]["params"]) == n_bb
    with pytest.raises(ValueError, match="bce_probe"):
        alg("bce_finetune", {"backbone_lr_scale": 0})


def test_predict_takes_uint8_or_normalised_images():
    a = alg("bce_finetune").eval()
    imgs, _ = tensor_data(4)
    with torch.no_grad():
        from_uint8 = a.predict(imgs)
        from_norm = a.predict(a.backbone.normalize(imgs))
    assert from_uint8.shape == (4, 7)
    torch.testing.assert_close(from_uint8, from_norm)


def test_supcon_has_no_predict_and_points_to_the_probe():
    a = alg("supcon")
    assert not a.can_predict and a.encoder is a.backbone
    with pytest.raises(PretrainOnlyError, match="cxrlab.probe") as e:
        a.predict(tensor_data(2)[0])
    assert "linear probe" in str(e.value) and isinstance(e.value, NotImplementedError)


def test_views_are_augmented_independently_unless_switched_off():
    imgs, _ = tensor_data(8)
    torch.manual_seed(0)
    v = alg("supcon").views(imgs)
    assert v.shape == (8, 2, 1, 32, 32) and v.dtype == torch.uint8
    assert not torch.equal(v[:, 0], v[:, 1]) and not torch.equal(v[:, 0], imgs)
    same = alg("supcon", {"augment": False}).views(imgs)
    assert torch.equal(same[:, 0], imgs) and torch.equal(same[:, 1], imgs)
    assert alg("bce_finetune", {"augment": True}).hparams["augment"] == "default"


def test_hyperparameters_are_checked():
    assert get_algorithm("supcon").default_hparams()["base_temperature"] == 0.07
    assert "backbone_lr_scale" in get_algorithm("bce_finetune").describe_hparams()
    with pytest.raises(ValueError, match="augment='heavy'"):
        alg("bce_finetune", {"augment": "heavy"})
    with pytest.raises(ValueError, match="7 of them"):
        alg("bce_probe", {"pos_weight": [1.0, 2.0]})
    with pytest.raises(HParamError, match="Known: "):
        alg("bce_probe", {"lr": 1e-3})
    # pos_weight: one number for every label, or one per label
    a = alg("bce_probe", {"pos_weight": 3.0})
    assert a.pos_weight.tolist() == [3.0] * 7


def test_unlabelled_entries_do_not_count():
    """A batch whose labels are all NaN gives a zero BCE loss (not NaN): nothing to learn."""
    a = alg("bce_finetune", {"augment": "none"}).train()
    imgs, y = tensor_data(8)
    out = a.training_step({"image": imgs, "labels": torch.full_like(y, float("nan"))}, 0)
    assert float(out["loss"].detach()) == 0.0
    out = alg("supcon", {"augment": "none"}).train().training_step(
        {"image": imgs, "labels": torch.full_like(y, float("nan"))}, 0)
    assert torch.isfinite(out["loss"])


def test_softmax_classifier_one_class_per_image(tmp_path):
    """The domain classifier's method: cross-entropy over one-hot rows, NaN rows left out."""
    from cxrlab.methods.softmax import onehot_cross_entropy

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]], requires_grad=True)
    onehot = torch.tensor([[1.0, 0, 0], [0, 0, 1], [float("nan")] * 3])
    loss = onehot_cross_entropy(logits, onehot)
    ref = torch.nn.functional.cross_entropy(logits[:2].detach(), torch.tensor([0, 2]))
    assert float(loss.detach()) == pytest.approx(float(ref))
    loss.backward()
    assert (logits.grad[2] == 0).all()              # the unlabelled row has no say
    assert float(onehot_cross_entropy(logits, torch.full((3, 3), float("nan"))).detach()) == 0.0
    with pytest.raises(ValueError, match="one-hot"):
        onehot_cross_entropy(logits, torch.tensor([[1.0, 1, 0], [0, 0, 1], [0, 1, 0]]))
    with pytest.raises(ValueError, match="two classes"):
        alg("softmax_classifier", n_labels=1)
    # three classes told apart by which of three signal cells is bright: it learns them
    cls = torch.arange(48) % 3
    y = torch.zeros(48, 7)
    y[torch.arange(48), cls] = 1.0
    imgs = torch.from_numpy(signal_images(y.numpy(), seed=3))[:, None]
    a = alg("softmax_classifier", n_labels=3)
    res = fit(a, (imgs, y[:, :3]), epochs=6, batch_size=16, lr=1e-2, seed=0,
              out_dir=tmp_path, device="cpu", verbose=False)
    assert res.history[-1]["accuracy"] > 0.9, res.history
    with torch.no_grad():
        assert (a.predict(imgs).argmax(1) == cls).float().mean() > 0.9
