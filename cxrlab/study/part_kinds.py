"""The registered part kinds of a course run: ``shift`` (notebook 01: the source -> target AUC
gap and the domain classifier) and ``attention`` (notebook 05: Grad-CAM energy on the drain,
the lungs and the lesion). Both run on the synthetic hospitals; every number is SYNTHETIC."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from cxrlab.study.config import StudyError
from cxrlab.study.parts import Part, PartUnit, mean_interval, pm, register_part


def _device(profile) -> str:
    from cxrlab.profiles import resolve_device

    return resolve_device(profile.device)


def _by_unit_mean(results: pd.DataFrame, keys: list[str], value: str = "value") -> pd.DataFrame:
    """Mean and t-interval over seeds of ``value`` per ``keys`` (one seed: the stored
    ``lo``/``hi`` where there are some)."""
    recs = []
    for key, g in results.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        m, lo, hi = mean_interval(g[value])
        if len(g) == 1 and "lo" in g and np.isfinite(g["lo"].iloc[0]):
            lo, hi = float(g["lo"].iloc[0]), float(g["hi"].iloc[0])
        recs.append({**dict(zip(keys, key)), "mean": m, "lo": lo, "hi": hi, "n_seeds": len(g)})
    return pd.DataFrame(recs)


@register_part("shift")
class ShiftPart(Part):
    """Notebook 01 as units: ``gap`` (a registered backbone fine-tuned at the source's train split,
    epoch kept on its val split, AUC at the source test split and at every target) and
    ``domain_cnn`` / ``domain_logreg`` (a classifier told to name the hospital of an image)."""

    METHODS = ("gap", "domain_cnn", "domain_logreg")
    DEFAULTS = {"methods": ["gap", "domain_cnn", "domain_logreg"], "backbones": None,
                "seeds": None, "synthetic": {}, "labels": None, "epochs": 4, "domain_epochs": 2,
                "max_per_domain": 400, "target_split": "all", "lr": 3e-3, "batch_size": 32,
                "published": "cohen2020", "title": "Domain shift (notebook 01)"}

    def check(self) -> None:
        super().check()
        if self.s["target_split"] not in ("all", "test"):
            raise StudyError(f"{self.where}: target_split must be 'all' or 'test', got "
                             f"{self.s['target_split']!r}")
        if self.s["labels"] is not None:
            from cxrlab.labels import get_label_space

            try:
                get_label_space(self.s["labels"])
            except KeyError as e:
                raise StudyError(f"{self.where}: labels: {e.args[0]}") from None

    def grid(self) -> list[PartUnit]:
        units = []
        for m in self.method_names():  # the logistic regression has no backbone
            bbs = ["features"] if m == "domain_logreg" else self.s["backbones"]
            units += [PartUnit(m, b, s) for b in bbs for s in self.s["seeds"]]
        return units

    def compute(self, unit: PartUnit):
        from cxrlab.shift import DEFAULT_GAP_LABELS, domain_classifier, source_target_gap

        cache = self.cache(shortcut=False)
        if unit.method == "gap":
            labels = self.s["labels"] or DEFAULT_GAP_LABELS
            split = None if self.s["target_split"] == "all" else "test"
            df, model = source_target_gap(
                cache, labels=labels, epochs=self.s["epochs"], seed=unit.seed, lr=self.s["lr"],
                batch_size=self.s["batch_size"], backbone=unit.backbone,
                device=_device(self.profile), target_split=split, return_model=True)
            ci = self._intervals(cache, model, df, list(labels), split, unit.seed)
            rows = []
            for _, r in df.iterrows():
                for c in [c for c in df.columns if c.startswith("auc_")] + ["drop"]:
                    lo, hi = ci.get((r["domain"], c), (float("nan"), float("nan")))
                    rows.append({"measure": c, "domain": r["domain"], "role": r["role"],
                                 "value": float(r[c]), "lo": lo, "hi": hi})
            return df, rows
        method = "cnn" if unit.method == "domain_cnn" else "logreg"
        res = domain_classifier(cache, seed=unit.seed, method=method,
                                epochs=self.s["domain_epochs"],
                                max_per_domain=self.s["max_per_domain"],
                                backbone=None if method == "logreg" else unit.backbone,
                                device=_device(self.profile))
        table = res.summary().reset_index().rename(columns={"index": "domain"})
        rows = [{"measure": k, "domain": "all", "role": "all", "value": float(v)}
                for k, v in (("accuracy", res.accuracy), ("chance", res.chance),
                             ("auc_macro_ovr", res.auc_macro_ovr))]
        return table, rows

    def _intervals(self, cache, model, df, labels, split, seed) -> dict:
        """95 % bootstrap intervals (over patients) of AUC macro per domain, and of each drop
        (source and target are independent samples: the half-widths add in quadrature)."""
        from cxrlab.data.dataset import load_arrays
        from cxrlab.metrics import bootstrap_ci

        n_boot = self.profile.bootstrap
        if n_boot < 2:
            return {}
        out, half = {}, {}
        for _, r in df.iterrows():
            rows = cache.select("test" if r["role"] == "source" else split, r["domain"])
            x, y = load_arrays(cache, rows, labels)
            b = bootstrap_ci(y.numpy(), model.predict_proba(x), metrics=["auc_macro"],
                             n_boot=n_boot, seed=seed, label_names=labels, per_label=True,
                             groups=cache.manifest["patient_id"].to_numpy()[rows])
            for _, q in b.iterrows():
                col = "auc_macro" if q["metric"] == "auc_macro" else (
                    f"auc_{q['metric'][4:]}" if q["metric"].startswith("auc:") else None)
                if col is None or col not in df.columns or not np.isfinite(r[col]):
                    continue
                out[(r["domain"], col)] = (float(q["lo"]), float(q["hi"]))  # percentile
                if col == "auc_macro":
                    half[r["domain"]] = (float(q["hi"]) - float(q["lo"])) / 2
        src = df.loc[df["role"] == "source", "domain"].iloc[0]
        for _, r in df.iterrows():
            if r["role"] == "target":
                h = float(np.hypot(half[src], half[r["domain"]]))
                out[(r["domain"], "drop")] = (float(r["drop"]) - h, float(r["drop"]) + h)
        return out

    # ------------------------------------------------------------------ report
    def gap_summary(self, results: pd.DataFrame) -> pd.DataFrame:
        g = results[(results["method"] == "gap")]
        return _by_unit_mean(g, ["backbone", "domain", "role", "measure"])

    def blocks(self, results: pd.DataFrame, folder: Path) -> list:
        from cxrlab.study.tables import published_cohen2020_table

        out = []
        if (results["method"] == "gap").any():
            s = self.gap_summary(results)
            s["text"] = [pm(m, lo, hi) for m, lo, hi in zip(s["mean"], s["lo"], s["hi"])]
            t = s[s["measure"].isin(["auc_macro", "drop"])].pivot_table(
                index=["backbone", "domain", "role"], columns="measure", values="text",
                aggfunc="first", sort=False).reset_index()
            t.insert(0, "data", "SYNTHETIC")
            n = int(s["n_seeds"].max())
            out += [("h", 3, "Source → target AUC gap"),
                    ("table", t, f"ours (SYNTHETIC): AUC macro over {len(self._labels())} "
                                 f"labels, mean [95 % interval, t over {n} seeds]"
                                 if n > 1 else "ours (SYNTHETIC): AUC macro, one seed: mean "
                                               "[95 % bootstrap interval over patients]; drop = "
                                               "source − this set, its interval treating the two "
                                               "test sets as independent")]
            lab = s[s["measure"].str.startswith("auc_") & (s["measure"] != "auc_macro")].copy()
            lab["label"] = lab["measure"].str[4:]
            lab = lab.groupby(["label", "domain"], sort=False)[["mean", "lo", "hi"]].mean()
            lab["text"] = [pm(m, lo, hi, 2) for m, lo, hi in lab.to_numpy()]
            per = lab["text"].unstack("domain").reset_index()
            per.insert(0, "data", "SYNTHETIC")
            out.append(("table", per, "ours (SYNTHETIC): AUC per label and hospital, mean "
                                      "[95 % interval] (over backbones); empty: the label has no "
                                      "positives there; Cohen et al.'s real-data AUCs follow"))
            pub = published_cohen2020_table()
            out.append(("table", pub, f"{pub.attrs['caption']}; {pub.attrs['citation']} "
                                      "(real data, not ours)", ".2f"))
            fig = self._gap_figure(folder)
            if fig is not None:
                out.append(("img", fig, "AUC per label, trained at the source (SYNTHETIC)"))
        dom = results[results["method"].str.startswith("domain")]
        if len(dom):
            d = _by_unit_mean(dom, ["method", "backbone", "measure"])
            d["text"] = [pm(m, lo, hi) for m, lo, hi in zip(d["mean"], d["lo"], d["hi"])]
            t = d.pivot_table(index=["method", "backbone"], columns="measure", values="text",
                              aggfunc="first", sort=False).reset_index()
            t.insert(0, "data", "SYNTHETIC")
            out += [("h", 3, "Domain classifier: which hospital is this image from?"),
                    ("table", t, "ours (SYNTHETIC): test-split accuracy, its chance level and "
                                 "one-vs-rest AUC")]
        return out

    def _labels(self):
        from cxrlab.shift import DEFAULT_GAP_LABELS

        return list(self.s["labels"] or DEFAULT_GAP_LABELS)

    def _gap_figure(self, folder: Path):
        import matplotlib.pyplot as plt

        from cxrlab.shift.plots import plot_auc_gap
        from cxrlab.style import save_figure

        units = [u for u in self.grid() if u.method == "gap"]
        f = folder / "units" / units[0].name / "table.csv" if units else None
        if f is None or not f.exists():
            return None
        df = pd.read_csv(f)
        df.attrs.update(synthetic=True, source="source",
                        target_split=self.s["target_split"])
        fig = plot_auc_gap(df)
        path = save_figure(fig, folder / "shift_auc_gap.png", dpi=80)
        plt.close(fig)
        return path

    def headline(self, results: pd.DataFrame) -> str:
        parts = []
        if (results["method"] == "gap").any():
            s = self.gap_summary(results)
            auc = s[s["measure"] == "auc_macro"].groupby(["domain", "role"], sort=False)[
                "mean"].mean().reset_index()
            src = float(auc.loc[auc["role"] == "source", "mean"].iloc[0])
            tg = auc[auc["role"] == "target"].sort_values("mean")
            worst = tg.iloc[0]
            parts.append(f"AUC macro {src:.3f} at the source test split vs {worst['mean']:.3f} at "
                         f"the hardest target ({worst['domain']}): a drop of "
                         f"{src - worst['mean']:.3f}")
        for method, what in (("domain_cnn", "CNN"), ("domain_logreg", "logistic regression")):
            d = results[(results["method"] == method)]
            if len(d):
                acc = d.loc[d["measure"] == "accuracy", "value"].mean()
                ch = d.loc[d["measure"] == "chance", "value"].mean()
                parts.append(f"the domain classifier ({what}) names the hospital with accuracy "
                             f"{acc:.2f} (chance {ch:.2f})")
        return "; ".join(parts)


@register_part("attention")
class AttentionPart(Part):
    """Notebook 05 as units: each arm (a registered method, its hyper-parameters, and whether
    its training source carries the chest-drain shortcut) is trained at the source hospital;
    Grad-CAM of the ``explain_label`` logit on the source test images that carry the drain
    gives the share of the map's energy on the drain, in the lungs and on the lesion (mean and
    95 % bootstrap interval over images), plus the label's AUC on the source test split with
    and without the shortcut."""

    DEFAULTS = {"methods": None, "backbones": None, "seeds": None, "synthetic": {},
                "labels": ["Cardiomegaly", "Effusion", "Pneumothorax", "Atelectasis"],
                "explain_label": "Pneumothorax", "epochs": 6, "batch_size": 64, "lr": 3e-3,
                "bootstrap": None, "max_images": 64, "published": None,
                "title": "Attention maps (notebook 05)"}
    _ARM_KEYS = {"name", "method", "hparams", "shortcut", "display"}

    def check(self) -> None:
        from cxrlab.labels import ALL_LABELS
        from cxrlab.methods import ALGORITHMS

        if not self.s["methods"]:
            raise StudyError(f"{self.where}: 'methods' is empty; list arms such as {{name: "
                             "erm_shortcut, method: bce_finetune, shortcut: true}")
        self.arms = {}
        for a in self.s["methods"]:
            a = {"name": a, "method": a} if isinstance(a, str) else a
            if not isinstance(a, Mapping) or set(a) - self._ARM_KEYS:
                raise StudyError(f"{self.where}: each arm is a mapping with keys "
                                 f"{sorted(self._ARM_KEYS)}; got {a!r}")
            method = a.get("method", a.get("name"))
            if method not in ALGORITHMS:
                raise StudyError(f"{self.where}: unknown method {method!r}"
                                 f"{_close_m(method, ALGORITHMS)}; registered methods: "
                                 f"{list(ALGORITHMS)}")
            hp = dict(a.get("hparams") or {})
            ALGORITHMS[method].resolve_hparams(hp)
            name = str(a.get("name", method))
            if name in self.arms:
                raise StudyError(f"{self.where}: arm name {name!r} appears twice")
            self.arms[name] = {"method": method, "hparams": hp,
                               "shortcut": bool(a.get("shortcut", False)),
                               "display": a.get("display") or name}
        for lab in list(self.s["labels"]) + [self.s["explain_label"]]:
            if lab not in ALL_LABELS:
                raise StudyError(f"{self.where}: unknown label {lab!r}; labels: {list(ALL_LABELS)}")
        if self.s["explain_label"] not in self.s["labels"]:
            raise StudyError(f"{self.where}: explain_label {self.s['explain_label']!r} must be "
                             f"one of labels {self.s['labels']}")
        syn = self.s.get("synthetic") or {}
        bad = sorted(set(syn) - {"n_per_hospital", "image_size", "seed"})
        if bad:
            raise StudyError(f"{self.where}: synthetic: unknown key(s) {bad}")

    def method_names(self) -> list[str]:
        return list(self.arms)

    def method_config(self, method: str):
        return self.arms[method]

    def compute(self, unit: PartUnit):
        import torch

        from cxrlab.data.dataset import load_arrays, load_masks
        from cxrlab.engine import fit, predict_scores
        from cxrlab.explain import analysis as A
        from cxrlab.methods import create_algorithm
        from cxrlab.metrics import masked_auc_macro
        from cxrlab.models import create_backbone

        arm, labels = self.arms[unit.method], list(self.s["labels"])
        k = labels.index(self.s["explain_label"])
        train_cache = self.cache(shortcut=arm["shortcut"])
        rows = train_cache.select("train", "source")
        x, y = load_arrays(train_cache, rows, labels)
        size = train_cache.image_size
        alg = create_algorithm(arm["method"], create_backbone(unit.backbone, image_size=size,
                                                              seed=unit.seed),
                               len(labels), arm["hparams"], seed=unit.seed)
        data = {"image": x, "labels": y, **load_masks(train_cache, rows)} if alg.needs else (x, y)
        fit(alg, data, epochs=self.s["epochs"], batch_size=min(self.s["batch_size"], len(rows)),
            lr=self.s["lr"], seed=unit.seed, out_dir=self.out / "checkpoints" / unit.name,
            verbose=False, device=_device(self.profile), resume=True)
        alg = alg.cpu().eval()
        sc = self.cache(shortcut=True)
        test = sc.select("test", "source")
        drain = test[sc.manifest["shortcut_marker"].to_numpy()[test] == 1][: self.s["max_images"]]
        rs = A.region_masks(sc, drain, self.s["explain_label"])
        df, _ = A.attention_table({arm["display"]: alg}, rs["images"], k, lung=rs["lung"],
                                  lesion=rs["lesion"], shortcut=rs["shortcut"], ids=drain)
        n_boot = self.profile.bootstrap if self.s["bootstrap"] is None else self.s["bootstrap"]
        summ = A.summarize(df, n_boot=n_boot, seed=unit.seed)
        out = [{"measure": r["metric"], "value": float(r["mean"]), "lo": float(r["lo"]),
                "hi": float(r["hi"]), "n": int(r["n"])} for _, r in summ.iterrows()]
        clean = self.cache(shortcut=False)
        for name, cache in (("auc_shortcut_source", sc), ("auc_clean_source", clean)):
            t = cache.select("test", "source")
            xt, yt = load_arrays(cache, t, labels)
            with torch.no_grad():
                p, _ = predict_scores(alg, (xt, yt))
            out.append({"measure": name, "value": float(masked_auc_macro(yt.numpy()[:, k], p[:, k])),
                        "lo": float("nan"), "hi": float("nan"), "n": len(t)})
        return df, out

    # ------------------------------------------------------------------ report
    MEASURES = {"share_shortcut": "share on the drain", "share_lung": "share in the lungs",
                "share_lesion": "share on the lesion", "pointing_lesion": "pointing game",
                "auc_shortcut_source": "AUC, source test (shortcut)",
                "auc_clean_source": "AUC, source test (no shortcut)"}

    def summary(self, results: pd.DataFrame) -> pd.DataFrame:
        return _by_unit_mean(results, ["method", "backbone", "measure"])

    def blocks(self, results: pd.DataFrame, folder: Path) -> list:
        import matplotlib.pyplot as plt

        from cxrlab.explain.plots import plot_attention_shares
        from cxrlab.style import save_figure

        s = self.summary(results)
        s["text"] = [pm(m, lo, hi, 2) for m, lo, hi in zip(s["mean"], s["lo"], s["hi"])]
        t = s.pivot_table(index=["method", "backbone"], columns="measure", values="text",
                          aggfunc="first", sort=False)
        t = t[[c for c in self.MEASURES if c in t.columns]].rename(columns=self.MEASURES)
        t = t.reset_index()
        t.insert(1, "trained with shortcut",
                 ["yes" if self.arms[m]["shortcut"] else "no" for m in t["method"]])
        t.insert(0, "data", "SYNTHETIC")
        n = int(s["n_seeds"].max())
        cap = (f"ours (SYNTHETIC): Grad-CAM of the {self.s['explain_label']} logit on the source "
               "test images that carry the chest drain; mean [95 % interval: "
               + ("bootstrap over images, 1 seed" if n == 1 else f"t over {n} seeds") + "]")
        fig = s[s["measure"].str.startswith("share_")].rename(columns={"method": "model",
                                                                        "measure": "metric"})
        f = plot_attention_shares(fig, title="SYNTHETIC: where Grad-CAM looks")
        path = save_figure(f, folder / "attention_shares.png", dpi=80)
        plt.close(f)
        return [("h", 3, "Where the maps look"), ("table", t, cap),
                ("img", path, "share of Grad-CAM energy per arm (SYNTHETIC)")]

    def headline(self, results: pd.DataFrame) -> str:
        s = self.summary(results)
        d = s[s["measure"] == "share_shortcut"].groupby("method", sort=False)["mean"].mean()
        return "Grad-CAM energy on the chest drain: " + ", ".join(
            f"{self.arms[m]['display']} {v:.2f}" for m, v in d.items())


def _close_m(name, known) -> str:
    import difflib

    c = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {c[0]!r}?)" if c else ""
