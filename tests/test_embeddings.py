"""Embedding cache: one forward pass, reused when (and only when) nothing changed."""
import numpy as np
import pytest
import torch

from cxrlab.probe.embeddings import embedding_key, extract_embeddings
from cxrlab.models import create_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cache(signal_cache):
    return signal_cache


class Counting:
    """Counts images that go through a backbone's forward."""

    def __init__(self, bb):
        self.n = 0
        bb.register_forward_pre_hook(lambda m, args: setattr(self, "n", self.n + len(args[0])))


def test_second_call_is_a_hit_and_matches(cache, tmp_path):
    bb = create_backbone("tiny_cnn", image_size=32)
    count = Counting(bb)
    rows = np.arange(5, 35)
    a, info = extract_embeddings(bb, cache, rows, batch_size=8, device="cpu",
                                 cache_dir=tmp_path, return_info=True)
    assert not info["hit"] and count.n == len(rows) and a.shape == (30, bb.num_features)
    assert a.dtype == torch.float32
    b, info = extract_embeddings(bb, cache, rows, batch_size=8, device="cpu",
                                 cache_dir=tmp_path, return_info=True)
    assert info["hit"] and count.n == len(rows) and torch.equal(a, b)
    # the cached values are the model's embeddings, in the order of ``rows``
    x = torch.from_numpy(np.asarray(cache.images[rows[::-1]]))[:, None]
    with torch.no_grad():
        assert torch.allclose(bb.embed(x), torch.flip(a, [0]), atol=1e-5)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("tiny_cnn-") and files[0].suffix == ".pt"


def test_changes_that_must_miss(cache, tmp_path):
    bb = create_backbone("tiny_cnn", image_size=32)
    rows = np.arange(10)
    k0, _ = embedding_key(bb, cache, rows)
    assert embedding_key(bb, cache, rows)[0] == k0
    assert embedding_key(bb, cache, rows[::-1].copy())[0] != k0  # order matters
    assert embedding_key(bb, cache, np.arange(11))[0] != k0  # other rows
    assert embedding_key(create_backbone("tiny_cnn", seed=1), cache, rows)[0] != k0  # weights
    assert embedding_key(bb, cache, rows, precision="bf16")[0] != k0
    with torch.no_grad():  # a fine-tuned backbone (same name and weights_id) must miss
        bb.model.features[0][0].weight.add_(0.01)
    assert bb.weights_id == "random-init-seed0" and embedding_key(bb, cache, rows)[0] != k0


def test_cache_dir_false_stores_nothing_and_backbone_state_is_restored(cache, tmp_path):
    bb = create_backbone("tiny_cnn", image_size=32).train()
    emb = extract_embeddings(bb, cache, np.arange(7), device="cpu", cache_dir=False)
    assert emb.shape == (7, bb.num_features) and bb.training
    assert not list(tmp_path.iterdir())
    with pytest.raises(IndexError, match="outside"):
        extract_embeddings(bb, cache, [0, len(cache)], device="cpu", cache_dir=False)


def test_write_is_atomic_and_corrupt_file_is_recomputed(cache, tmp_path, monkeypatch):
    import cxrlab.probe.embeddings as E
    from cxrlab.io import atomic_path

    bb = create_backbone("tiny_cnn", image_size=32)
    rows = np.arange(6)

    def crash(obj, path):  # the process dies while saving: no file may appear
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half a file")
            raise KeyboardInterrupt

    monkeypatch.setattr(E, "atomic_torch_save", crash)
    with pytest.raises(KeyboardInterrupt):
        extract_embeddings(bb, cache, rows, device="cpu", cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())
    monkeypatch.undo()
    # a stale file under the right name (other content) is not trusted
    key, fields = embedding_key(bb, cache, rows)
    torch.save({"embeddings": torch.zeros(6, 3), "fields": fields}, tmp_path / f"tiny_cnn-{key}.pt")
    emb, info = extract_embeddings(bb, cache, rows, device="cpu", cache_dir=tmp_path,
                                   return_info=True)
    assert not info["hit"] and emb.shape == (6, bb.num_features)
    assert extract_embeddings(bb, cache, rows, device="cpu", cache_dir=tmp_path,
                              return_info=True)[1]["hit"]
