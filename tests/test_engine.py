"""The training engine: exact resume after a real kill, NaN guard, atomic checkpoints,
configuration checks, deterministic batch order, registry errors."""
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from cxrlab.engine import (CheckpointMismatchError, NonFiniteLossError, fit, load_checkpoint)
from cxrlab.engine.batching import EpochBatchSampler, collate_dict
from cxrlab.methods import ALGORITHMS, Algorithm, HParamError, create_algorithm, get_algorithm
from cxrlab.methods import register_algorithm
from cxrlab.methods.bce import BCEFinetune
from cxrlab.models import create_backbone

from tests.helpers import REPO_ROOT, script_command, subprocess_env
from tests.helpers.engine import tensor_data

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- helpers
def assert_same(a, b, path="checkpoint", skip=("seconds",)):
    """Recursively: tensors bit-identical, everything else equal (``skip`` keys ignored)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        ka = {k for k in a if k not in skip}
        kb = {k for k in b if k not in skip}
        assert ka == kb, f"{path}: keys {sorted(ka ^ kb, key=str)} differ"
        for k in ka:
            assert_same(a[k], b[k], f"{path}.{k}", skip)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]", skip)
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def tiny_alg(name="bce_finetune", hparams=None, n_labels=7):
    return create_algorithm(name, create_backbone("tiny_cnn", image_size=32, seed=0), n_labels,
                            hparams, seed=0)


def small_fit(alg, data, out, **kw):
    args = dict(epochs=2, batch_size=16, lr=3e-3, seed=1, out_dir=out, device="cpu",
                verbose=False, log_every=3)
    args.update(kw)
    return fit(alg, data, **args)


@pytest.fixture
def cache(signal_cache):
    return signal_cache


def _start(args, out):
    return subprocess.Popen(script_command("train_tiny", *args, "--out", str(out)), cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=subprocess_env())


def _line_reader(proc) -> "queue.Queue[str | None]":
    q: "queue.Queue[str | None]" = queue.Queue()

    def pump():
        for line in proc.stdout:
            q.put(line.rstrip("\n"))
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _wait_for(q, pred, seen, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            raise AssertionError("the training process ended early:\n" + "\n".join(seen))
        seen.append(line)
        if pred(line):
            return line
    raise AssertionError("timed out waiting for the training process:\n" + "\n".join(seen))


# ------------------------------------------------------------------- resume after a kill
def test_resume_after_sigkill_matches_uninterrupted_run(cache, tmp_path):
    """A real process is SIGKILLed in the middle of epoch 3 of 4; running the same command
    again resumes from the epoch-2 checkpoint and ends bit-identical to a run never stopped
    (weights, optimiser state, schedule, history, validation metrics, best epoch)."""
    from tests.scripts.train_tiny import run

    common = ["--cache", str(cache.path), "--epochs", "4"]
    victim = _start(common + ["--slow-from", "3"], tmp_path / "killed")
    seen: list[str] = []
    try:
        q = _line_reader(victim)
        _wait_for(q, lambda s: s == "EPOCH_DONE 2", seen)
        _wait_for(q, lambda s: s.startswith("STEP 3 "), seen)  # inside epoch 3
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
    assert not any(s.startswith("EPOCH_DONE 3") for s in seen)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 2

    resumed = _start(common, tmp_path / "killed")  # the same command again
    ref = run(cache.path, tmp_path / "ref", epochs=4, say=lambda s: None)  # meanwhile, here
    out, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, out
    assert "RESUMED_FROM 2" in out and "EPOCH_DONE 3" in out and "EPOCH_DONE 2" not in out
    assert ref.resumed_from == 0

    a = load_checkpoint(tmp_path / "ref" / "last.pt")
    b = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert a["epoch"] == b["epoch"] == 4 and a["global_step"] == b["global_step"] == 24
    for key in ("model", "optimizer", "scheduler", "history", "steps", "best_epoch",
                "best_value", "config_hash"):
        assert_same(a[key], b[key], key)
    assert len(a["history"]) == 4 and "val_auc_macro" in a["history"][-1]
    # the run learnt something, so equality is not the trivial equality of untrained models
    assert a["history"][-1]["loss"] < a["history"][0]["loss"]
    assert_same(load_checkpoint(tmp_path / "ref" / "best.pt")["model"],
                load_checkpoint(tmp_path / "killed" / "best.pt")["model"], "best")


def test_in_process_interrupt_then_resume_is_exact(tmp_path):
    """Same property for SupCon (two random views per step) without a subprocess: an
    exception after epoch 1 stops the run; the resumed run equals the uninterrupted one."""
    data = tensor_data(48)
    ref = small_fit(tiny_alg("supcon"), data, tmp_path / "ref", epochs=3)

    def stop(rec):
        if rec["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        small_fit(tiny_alg("supcon"), data, tmp_path / "b", epochs=3, on_epoch_end=stop)
    fresh = tiny_alg("supcon")  # a new process would build the model from scratch too
    res = small_fit(fresh, data, tmp_path / "b", epochs=3)
    assert res.resumed_from == 1 and len(res.history) == 3
    assert_same(ref.history, res.history, "history")
    assert_same(load_checkpoint(ref.last_path)["model"], fresh.state_dict(), "model")


def test_finished_run_is_loaded_not_retrained(tmp_path):
    data = tensor_data(32)
    alg = tiny_alg()
    first = small_fit(alg, data, tmp_path, epochs=1, keep_epochs=True)
    assert load_checkpoint(tmp_path / "epoch_001.pt")["epoch"] == 1
    again = tiny_alg()
    again.head.weight.data.zero_()
    second = small_fit(again, data, tmp_path, epochs=1)
    assert second.resumed_from == 1 and second.history == first.history
    assert_same(alg.state_dict(), again.state_dict(), "weights")


@pytest.mark.parametrize("mode,best", [("min", 2), ("max", 3)])
def test_best_checkpoint_follows_the_monitored_metric(tmp_path, mode, best):
    scores = iter([0.5, 0.2, 0.9])  # one per epoch
    res = small_fit(tiny_alg(), tensor_data(32), tmp_path, epochs=3, monitor="loss",
                    monitor_mode=mode, val_fn=lambda alg: {"loss": next(scores)})
    assert [h["val_loss"] for h in res.history] == [0.5, 0.2, 0.9]
    assert res.best_epoch == best and load_checkpoint(res.best_path)["epoch"] == best


# ------------------------------------------------------------------------------ guards
class NaNAt(BCEFinetune):
    """BCE fine-tune whose loss turns non-finite at one global step (for the guard test)."""

    name = "nan_at_test"
    HPARAMS = {**BCEFinetune.HPARAMS, "bad_step": (7, "global step at which the loss breaks"),
               "bad_value": ("nan", "nan or inf")}

    def training_step(self, batch, step):
        out = super().training_step(batch, step)
        if step == self.hparams["bad_step"]:
            out["loss"] = out["loss"] * float(self.hparams["bad_value"])
        return out


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_loss_stops_naming_the_step(tmp_path, bad):
    alg = NaNAt(create_backbone("tiny_cnn", image_size=32), 7, {"bad_value": bad, "augment": "none"})
    with pytest.raises(NonFiniteLossError) as e:
        small_fit(alg, tensor_data(64), tmp_path, epochs=3)  # 4 steps per epoch
    assert str(e.value).startswith(f"loss became {bad} at epoch 2, step 3 (global step 7); "
                                   "lower the learning rate")
    # the last checkpoint on disk is the good one of epoch 1
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_crash_while_saving_keeps_previous_checkpoint(tmp_path, monkeypatch):
    data = tensor_data(32)
    calls = {"n": 0}
    real_save = torch.save

    def flaky_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the epoch-2 checkpoint: write half a file, then die
            Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
            raise OSError("disk full (simulated)")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(OSError, match="simulated"):
        small_fit(tiny_alg(), data, tmp_path, epochs=3)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"
    res = small_fit(tiny_alg(), data, tmp_path, epochs=3)
    assert res.resumed_from == 1 and [h["epoch"] for h in res.history] == [1, 2, 3]


def test_resume_with_other_config_is_refused(tmp_path):
    data = tensor_data(32)
    small_fit(tiny_alg(), data, tmp_path, epochs=1, lr=1e-3)
    with pytest.raises(CheckpointMismatchError, match=r"lr: 0\.001 -> 0\.002"):
        small_fit(tiny_alg(), data, tmp_path, epochs=1, lr=2e-3)
    with pytest.raises(CheckpointMismatchError, match="hparams"):
        small_fit(tiny_alg(hparams={"backbone_lr_scale": 0.5}), data, tmp_path, epochs=1, lr=1e-3)
    with pytest.raises(CheckpointMismatchError, match="data"):  # other labels, same size
        small_fit(tiny_alg(), tensor_data(32, seed=5), tmp_path, epochs=1, lr=1e-3)
    res = small_fit(tiny_alg(), data, tmp_path, epochs=1, lr=2e-3, resume=False)
    assert res.resumed_from == 0 and load_checkpoint(res.last_path)["config"]["lr"] == 2e-3


def test_bad_arguments_have_clear_errors(tmp_path):
    data = tensor_data(32)
    with pytest.raises(ValueError, match="num_labels=7"):
        small_fit(tiny_alg(n_labels=3), data, tmp_path)
    with pytest.raises(ValueError, match="fewer than batch_size=64"):
        small_fit(tiny_alg(), data, tmp_path, batch_size=64)
    with pytest.raises(ValueError, match="optimizer"):
        small_fit(tiny_alg(), data, tmp_path, optimizer="adam")


def test_cpu_bf16_falls_back_and_compile_keeps_checkpoint_keys(tmp_path):
    alg = tiny_alg(hparams={"augment": "none"})
    keys = set(alg.state_dict())
    with pytest.warns(UserWarning, match="bf16"):
        res = small_fit(alg, tensor_data(32), tmp_path, epochs=1, precision="bf16",
                        compile="eager")
    assert res.config["precision"] == "fp32"
    assert set(load_checkpoint(res.last_path)["model"]) == keys


# -------------------------------------------------------------------------- batch order
def test_batch_order_is_a_function_of_seed_and_epoch():
    def batches(seed, epoch, rank=0, world=1, bs=8):
        s = EpochBatchSampler(50, bs, seed, rank, world)
        s.set_epoch(epoch)
        return list(s)

    assert batches(0, 3) == batches(0, 3)
    assert batches(0, 3) != batches(0, 4) and batches(0, 3) != batches(1, 3)
    assert len(batches(0, 1)) == 50 // 8 and all(len(b) == 8 for b in batches(0, 1))
    # two ranks split every global batch into halves, in order
    r0, r1 = batches(0, 2, 0, 2), batches(0, 2, 1, 2)
    assert [a + b for a, b in zip(r0, r1)] == batches(0, 2)
    with pytest.raises(ValueError, match="divisible"):
        EpochBatchSampler(50, 9, 0, 0, 2)


def test_collate_names_tuple_items_including_masks():
    img = torch.zeros(1, 4, 4, dtype=torch.uint8)
    items = [(img, torch.tensor([1.0, float("nan")]), i, img, img.int()) for i in range(3)]
    b = collate_dict(items)
    assert list(b) == ["image", "labels", "row", "lung_mask", "lesion_mask"]
    assert b["image"].shape == (3, 1, 4, 4) and b["row"].tolist() == [0, 1, 2]


def test_cache_dataset_and_masks_reach_the_algorithm(cache, tmp_path):
    """A dict with masks passes through fit unchanged (the batch contract for RRR/ActDiff)."""
    from cxrlab.data.dataset import CacheDataset

    seen = {}

    class Spy(BCEFinetune):
        name = "spy_test"

        def training_step(self, batch, step):
            seen.update({k: (v.dtype, tuple(v.shape)) for k, v in batch.items()})
            return super().training_step(batch, step)

    alg = Spy(create_backbone("tiny_cnn", image_size=32), 7, {"augment": "none"})
    small_fit(alg, CacheDataset(cache, cache.select("train"), "shared7"), tmp_path / "a", epochs=1)
    assert seen["image"] == (torch.uint8, (16, 1, 32, 32)) and seen["labels"][1] == (16, 7)
    imgs, y = tensor_data(32)
    data = {"image": imgs, "labels": y, "lung_mask": torch.ones_like(imgs)}
    small_fit(alg, data, tmp_path / "b", epochs=1)
    assert seen["lung_mask"] == (torch.uint8, (16, 1, 32, 32)) and seen["row"][0] == torch.int64


# ------------------------------------------------------------------------------ registry
def test_registry_lookup_and_errors():
    assert set(ALGORITHMS) >= {"bce_probe", "bce_finetune", "supcon"}
    assert get_algorithm("supcon").name == "supcon"
    with pytest.raises(KeyError, match="Did you mean 'bce_finetune'"):
        get_algorithm("bce_fintune")
    with pytest.raises(HParamError, match="Did you mean 'backbone_lr_scale'") as e:
        tiny_alg(hparams={"backbone_lr_scal": 0.1})
    assert "bce_finetune has no hyper-parameter 'backbone_lr_scal'" in str(e.value)
    with pytest.raises(ValueError, match="already registered"):
        register_algorithm("supcon", BCEFinetune)
    with pytest.raises(TypeError, match="subclass"):
        register_algorithm("not_an_algorithm", dict)

    @register_algorithm("engine_test_dummy")
    class Dummy(BCEFinetune):
        pass

    try:
        assert get_algorithm("engine_test_dummy") is Dummy and Dummy.name == "engine_test_dummy"
        assert issubclass(Dummy, Algorithm)
    finally:
        ALGORITHMS.pop("engine_test_dummy")


def test_fit_config_object_is_checked_on_creation_and_equals_keyword_arguments(tmp_path):
    from cxrlab.engine import FitConfig

    for bad, match in (({"epochs": 0}, "epochs"), ({"lr": float("nan")}, "lr"),
                       ({"lr": -1.0}, "lr"), ({"weight_decay": -5}, "weight_decay"),
                       ({"schedule": "step"}, "schedule"), ({"monitor_mode": "up"}, "monitor_mode")):
        with pytest.raises(ValueError, match=match):
            FitConfig(**{"epochs": 1, "batch_size": 8, "lr": 1e-3, "out_dir": tmp_path, **bad})
    data = tensor_data(32)
    cfg = FitConfig(epochs=2, batch_size=16, lr=3e-3, seed=1, out_dir=tmp_path / "a",
                    device="cpu", verbose=False, log_every=3)
    a = fit(tiny_alg(), data, cfg)
    b = small_fit(tiny_alg(), data, tmp_path / "b")
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    c = fit(tiny_alg(), data, cfg, out_dir=tmp_path / "c", lr=1e-4)  # keyword overrides
    assert c.config["lr"] == 1e-4 and c.history[0]["loss"] != a.history[0]["loss"]
