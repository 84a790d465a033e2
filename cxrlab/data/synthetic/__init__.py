"""The synthetic hospitals: chest-radiograph phantoms with exact lung and lesion masks.

>>> from cxrlab.data.synthetic import generate, hospital_table, write_synthetic_cache
>>> batch = generate("source", n=8, image_size=64, seed=0)     # SynthBatch
>>> batch.images.shape, batch.labels.shape                       # (8, 64, 64), (8, 14)
>>> hospital_table()                                             # every site's parameters
>>> cache = write_synthetic_cache("data/synth", n_per_hospital=400)   # all hospitals, a Cache
>>> cache = ensure_synthetic_cache("data/synth", n_per_hospital=400)  # reuse if up to date

Modules: :mod:`.labels_prior` (NIH label combinations), :mod:`.hospitals` (the table),
:mod:`.anatomy`, :mod:`.findings`, :mod:`.acquisition`, :mod:`.generator`, :mod:`.writer`.
Everything here is synthetic: results on it say how methods behave under *these* shifts,
not how they perform on patients.
"""
from .generator import BLOCK, GENERATOR_VERSION, MIN_SIZE, SynthBatch, generate, shortcut_masks
from .hospitals import HOSPITALS, SOURCE, HospitalSpec, get_hospital, hospital_table, \
    hospital_table_markdown
from .labels_prior import build_label_prior, load_label_prior

__all__ = ["BLOCK", "GENERATOR_VERSION", "MIN_SIZE", "SynthBatch", "generate", "HOSPITALS", "SOURCE", "HospitalSpec",
           "get_hospital", "hospital_table", "hospital_table_markdown", "build_label_prior",
           "load_label_prior", "write_synthetic_cache", "ensure_synthetic_cache",
           "synthetic_cache_matches", "cache_shortcut_masks", "shortcut_masks"]


def __getattr__(name):
    if name in ("write_synthetic_cache", "ensure_synthetic_cache", "synthetic_cache_matches",
                "cache_shortcut_masks"):
        from . import writer

        return getattr(writer, name)
    raise AttributeError(name)
