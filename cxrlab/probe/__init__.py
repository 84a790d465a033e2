"""Scoring a frozen encoder: its embeddings, computed once and cached on disk
(:mod:`~cxrlab.probe.embeddings`), and a linear probe trained on them
(:mod:`~cxrlab.probe.linear`).

Seed 000 evaluated every backbone this way (BCE linear probe on frozen ImageNet features, and
the frozen SupCon encoder); :mod:`cxrlab.study` does the same for every method whose
``scoring`` is ``"probe"`` or ``"embed_probe"``::

    from cxrlab.probe import extract_embeddings, train_linear_probe, predict_proba
    emb = extract_embeddings(backbone, cache, rows)
    probe = train_linear_probe(emb_train, y_train, emb_val, y_val, epochs=30)
"""
from cxrlab.probe.embeddings import compute_embeddings, embedding_key, extract_embeddings
from cxrlab.probe.linear import (LinearProbe, fit_standardizer, predict_proba, select_linear_probe,
                                 train_frozen_probe_epochs, train_linear_probe)

__all__ = ["LinearProbe", "compute_embeddings", "embedding_key", "extract_embeddings",
           "fit_standardizer", "predict_proba", "select_linear_probe", "train_frozen_probe_epochs",
           "train_linear_probe"]
