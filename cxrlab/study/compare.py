"""Two arms of one study, compared on the same patients: a paired bootstrap per backbone, seed
and evaluation set.

Two arms scored on the same test images share what made those images easy or hard; resampling
the patients once per replicate and scoring both arms on it (:func:`cxrlab.metrics.
bootstrap_difference`) cancels that shared part, so the interval of the *difference* is the
one to read, not the overlap of the two arms' own intervals.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab import metrics as M
from cxrlab.errors import MissingInputError, UnknownNameError
from cxrlab.labels import get_label_space
from cxrlab.study.tables import TARGETS_MEAN


def _unit_predictions(out: Path, unit: str) -> np.lib.npyio.NpzFile:
    path = out / "units" / unit / "predictions.npz"
    if not path.exists():
        raise MissingInputError(f"{path} is missing: unit {unit!r} has not finished; run the "
                                "study again (finished units are skipped)")
    return np.load(path)


def paired_bootstrap(res, data, arm: str, baseline: str, metric: str = "auc_macro",
                     label_space: str = "shared7", threshold: str = "tuned_source_val",
                     n_boot: int = 500, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """``arm`` minus ``baseline`` (in % points) per (backbone, seed, evaluation set) of study
    result ``res``, with a paired patient bootstrap interval, plus, per (backbone, seed), the
    mean over the targets (its interval from the same replicates is not computed: the row gives
    the mean difference and ``n_beyond`` of its targets).

    ``data`` is the study's :class:`~cxrlab.study.StudyData` (patient ids for the resampling).
    Columns: backbone, model, seed, domain, role, arm, baseline, a, b, diff, lo, hi, verdict
    (``"arm better"``, ``"baseline better"`` or ``"within noise"``)."""
    from cxrlab.models import display_name

    units = res.units
    for a in (arm, baseline):
        if a not in set(units["method"]):
            raise UnknownNameError(f"arm {a!r} is not in study {res.name!r}; arms: "
                                   f"{list(dict.fromkeys(units['method']))}")
    labels = get_label_space(label_space)
    thr_key = {"tuned_source_val": "thresholds_tuned_source_val", "fixed0.5": None}
    if threshold not in thr_key:
        raise UnknownNameError(f"threshold {threshold!r}: choose tuned_source_val or fixed0.5")
    rows = []
    pairs = units[units["method"] == arm].merge(units[units["method"] == baseline],
                                                on=["backbone", "seed"], suffixes=("_a", "_b"))
    for p in pairs.itertuples():
        pa, pb = _unit_predictions(Path(res.out), p.unit_a), _unit_predictions(Path(res.out), p.unit_b)
        names = list(pa["label_names"])
        k = [names.index(lab) for lab in labels if lab in names]
        for dom in data.eval_names:
            y = pa[f"{dom}__labels"][:, k]
            if not np.array_equal(pa[f"{dom}__rows"], pb[f"{dom}__rows"]):
                raise ValueError(f"{p.unit_a} and {p.unit_b} scored different images of {dom}")
            ta = pa[thr_key[threshold]][k] if thr_key[threshold] else None
            tb = pb[thr_key[threshold]][k] if thr_key[threshold] else None
            d = M.bootstrap_difference(y, pa[f"{dom}__scores"][:, k], pb[f"{dom}__scores"][:, k],
                                       metric=metric, thresholds_a=ta, thresholds_b=tb,
                                       n_boot=n_boot, seed=seed, level=level,
                                       groups=data.groups(dom))
            verdict = ("arm better" if d["lo"] > 0 else "baseline better" if d["hi"] < 0
                       else "within noise")
            rows.append({"backbone": p.backbone, "model": display_name(p.backbone),
                         "seed": p.seed, "domain": dom, "role": data.sets[dom].role,
                         "arm": arm, "baseline": baseline, "a": 100 * d["a"], "b": 100 * d["b"],
                         "diff": 100 * d["diff"], "lo": 100 * d["lo"], "hi": 100 * d["hi"],
                         "verdict": verdict})
    out = pd.DataFrame(rows)
    out.attrs.update(metric=metric, label_space=label_space, threshold=threshold,
                     synthetic=bool(res.synthetic), targets_mean=TARGETS_MEAN)
    return out


__all__ = ["paired_bootstrap"]
