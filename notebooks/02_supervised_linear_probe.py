# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Frozen backbones and a linear probe: in-domain vs out-of-domain
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cxrlab/cxrlab/blob/main/notebooks/02_supervised_linear_probe.ipynb)
#
# A student project (its slides are one of the two documents this course grew from; we call it
# *the student project*) trained chest X-ray classifiers on **MIMIC-CXR** (Boston) and tested them
# on **NIH ChestX-ray14** (Bethesda): three ImageNet backbones were frozen, and only a linear
# layer on top of their features was trained with binary cross-entropy (BCE), the *linear
# probe*. This notebook redoes that experiment, and fixes what it got wrong.
#
# **What you will learn here**
# 1. the three architectures (ResNet-50, EfficientNet-B0, ViT-B/16), what *frozen* means, why
#    pre-training matters for a frozen probe, and why each image's embedding is computed **once**;
# 2. how much a model loses when it leaves its hospital (**in-domain vs out-of-domain**), and
#    whether the loss is larger than its interval;
# 3. the **14-label vs shared-label pitfall**, with the arithmetic behind it;
# 4. why F1 needs a threshold, what a **calibrated** probe changes, and why thresholds are tuned
#    on the **source validation split** only;
# 5. how to read the published numbers of the student project and of Cohen et al. (2020) beside ours.
#
# **Time**: `ci` about 2 minutes on a 2-core laptop CPU (measured; synthetic hospitals, tiny
# stand-in backbones); `cpu` about 10 minutes (estimate); `gpu` about 30 minutes on one A100 with
# prepared MIMIC-CXR and NIH caches, most of it computing embeddings once (estimate).

# %%
# Colab / a fresh environment: install cxrlab only when it is missing (Colab already has torch)
import importlib.util, subprocess, sys
if importlib.util.find_spec("cxrlab") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                           "cxrlab @ git+https://github.com/cxrlab/cxrlab.git"])

# %% [markdown]
# ## 1. Configuration from the profile
# Everything below is sized by the active profile (notebook 00). Under `ci` (what the stored
# outputs come from) the data are the **synthetic hospitals** and the backbones are **tiny
# stand-ins with pre-trained weights** shipped with the package, so the notebook runs on a CPU in
# about two minutes; the numbers are SYNTHETIC and say nothing about real patients. Under `gpu`
# the same cells run ResNet-50, EfficientNet-B0 and ViT-B/16 with ImageNet weights on
# MIMIC-CXR → NIH when those caches exist, and say so when they fall back to the synthetic data.

# %%
# %matplotlib inline
import os, subprocess, sys, textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from cxrlab import study as S
from cxrlab.claims import claim
from cxrlab.course import setup
from cxrlab.models import display_name
from cxrlab.study import plots as P

prof = setup()

# %% [markdown]
# ## 2. Three architectures, frozen, pre-trained
# The student project compared three families, all pretrained on ImageNet (natural photographs):
#
# | model | family | how it sees an image |
# |---|---|---|
# | ResNet-50 | convolutional, residual | local filters stacked in 4 stages, global average pooling → 2048-d |
# | EfficientNet-B0 | convolutional, depthwise + squeeze-excitation | compound-scaled mobile blocks → 1280-d |
# | ViT-B/16 | transformer | 16×16-px patches as tokens, global self-attention → 768-d class token |
#
# *Frozen* means the backbone's weights never change: it is a fixed feature extractor, and the
# only thing trained is a linear layer (one weight vector and bias per label) on its pooled
# embedding. A frozen probe can only be as good as the features it reads, so **what the
# backbone learnt before** is the whole story. Under `ci` the three are replaced by tiny
# stand-ins of the same families (a small CNN, a one-block-per-stage ResNet, a 2-layer ViT),
# **pre-trained** by `scripts/pretrain_standins.py` with supervised 14-finding BCE on twelve
# synthetic *pre-training hospitals* that share no hospital, seed or image with the course's
# four: the analogue of torchxrayvision's models, pre-trained across many chest X-ray data sets.
# Random initialisation stays available (`pretrained=False`) as the comparison of section 5.

# %%
# NBVAL_CHECK_OUTPUT
from cxrlab.models import describe_backbones

names = ["resnet50", "efficientnet_b0", "vit_base_patch16_224", "tiny_cnn", "tiny_resnet", "tiny_vit"]
table = pd.DataFrame(describe_backbones()).set_index("name").loc[names]
table = table.rename(columns={"display_name": "display name", "stands_in_for": "CI stand-in for"})
table[["display name", "description", "published_weights", "CI stand-in for"]]

# %% [markdown]
# **ImageNet weights need the internet once.** With `pretrained=True`, `create_backbone`
# downloads them from the Hugging Face hub (and caches them). A course machine, a CI runner or a
# hospital cluster often has no internet; then you get an error that says what to do instead of
# a silent random model. The next cell *simulates* an offline machine (`HF_HUB_OFFLINE=1` in a
# separate process) to show that message:

# %%
snippet = '''
from cxrlab.models import create_backbone
try:
    create_backbone("resnet50", pretrained=True)
except Exception as err:
    print(type(err).__name__ + ":", err)
'''
env = dict(os.environ, HF_HUB_OFFLINE="1")
msg = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True, text=True).stdout
print("\n".join(textwrap.shorten(line, 150) for line in msg.splitlines()[:8]))

# %% [markdown]
# Both ways out work offline: fetch the file on another machine and pass it with
# `create_backbone("resnet50", weights="weights/resnet50.safetensors")` (in a study config:
# `weights: {resnet50: weights/resnet50.safetensors}`), or accept random initialisation
# (`CXRLAB_PRETRAINED=0`), and then never compare the numbers with published pretrained ones.
#
# ## 3. The data: a source hospital and three targets
# The study follows a *protocol* (`cxrlab/data/protocols/`): one **source** with patient-level
# train / validation / test splits, and **targets** used only for evaluation. On the synthetic
# hospitals the source draws all 14 NIH findings; to reproduce MIMIC-CXR's situation we hide
# (set to *missing*, NaN) the seven NIH labels MIMIC does not define, at the source only. Each
# synthetic hospital has 2,000 images here: the source's validation split, on which thresholds
# are tuned, then holds about 160 images.

# %%
from cxrlab.data.protocols import load_protocol

def real_caches_ready(protocol: str) -> bool:
    paths = load_protocol(protocol).cache_paths(prof.data_dir).values()
    return all((p / "meta.json").exists() for p in paths)

N_PER_HOSPITAL = max(prof.n_per_hospital, 2000)
REAL = prof.data == "real" and real_caches_ready("mimic_to_nih")
if REAL:     # gpu profile with prepared MIMIC-CXR and NIH caches: the student project's setting
    config = {"name": "02_linear_probe", "protocol": "mimic_to_nih",
              "label_spaces": ["shared7", "nih14"], "methods": ["bce_probe"]}
else:        # the synthetic hospitals (every result below is SYNTHETIC)
    if prof.data == "real":
        print("no prepared MIMIC-CXR / NIH caches under", prof.data_dir, "(see `cxrlab data "
              "prepare`): this notebook falls back to the SYNTHETIC hospitals")
    config = {"name": "02_linear_probe", "protocol": "synthetic",
              "target_split": "all",          # targets are never trained or tuned on
              "mask_source_labels": "mimic",  # the source labels what MIMIC-CXR labels
              "label_spaces": ["shared7", "nih14"], "methods": ["bce_probe"],
              "probe_lr": 3e-3, "synthetic": {"n_per_hospital": N_PER_HOSPITAL}}

# %%
# NBVAL_CHECK_OUTPUT
from cxrlab.labels import NIH14, SHARED7, defined_labels

hidden = S.mask_labels("mimic")
print("shared by NIH and MIMIC/CheXpert:", ", ".join(SHARED7))
print("NIH labels MIMIC-CXR never annotates:", ", ".join(hidden))

# %%
cfg = S.load_study_config(config)
data = S.load_study_data(cfg, prof)          # writes the synthetic cache once, then reuses it
print(data.protocol.describe().split("  source of")[0])
data.describe()

# %% [markdown]
# `labels_defined` counts the labels a set annotates at all: 7 at the (MIMIC-like) source, 14 at
# the targets. Images of one patient stay in one split (no leakage), and the intervals later
# resample **patients**, not images.
#
# **Positives per label.** An AUC or an F1 resting on a handful of positives moves a lot with
# the next handful; a tuned threshold even more. Counts below 10 are flagged `(<10)`: read those
# labels' numbers as anecdotes.

# %%
pos = data.positives(SHARED7)
few = pos.attrs["few"]
display(data.positives_styled(SHARED7))
print("fewer than 10 positives:", ", ".join(f"{lab} in {s}" for lab, s in few) or "none")

# %% [markdown]
# ## 4. Embeddings once, then a probe in seconds
# A frozen backbone gives every image the same embedding in every epoch. The student project
# trained its probe for 10 epochs by sending every image through the backbone 10 times; 9 of
# those forward passes recomputed numbers it already had. `cxrlab.probe.extract_embeddings` runs
# **one** forward pass per image and stores the result on disk under a key made of the
# backbone's weights, the data and the preprocessing; the second call reads the file.

# %%
import tempfile
from cxrlab.probe import extract_embeddings
from cxrlab.models import create_backbone

bb = create_backbone(prof.backbones[0], pretrained=prof.pretrained,
                     image_size=data.sets["train"].cache.image_size)
s = data.sets["train"]
with tempfile.TemporaryDirectory() as tmp:   # a fresh embedding store for this demonstration
    for attempt in ("first call", "second call"):
        emb, info = extract_embeddings(bb, s.cache, s.rows, cache_dir=tmp, return_info=True)
        print(f"{attempt}: {tuple(emb.shape)} embeddings of {bb.name} ({bb.weights_id}), read "
              f"from disk: {info['hit']}, {info['seconds']:.2f} s")

# %% [markdown]
# The linear probe (`cxrlab.probe.train_linear_probe`) then trains on these tensors: masked BCE
# (a missing label is ignored, never counted as a negative) and AdamW. It is **calibrated** by
# construction: each label's bias starts at the logit of its training prevalence (the model
# starts out predicting the base rate, not 50 % for a finding seen in 3 % of images), the epoch
# kept is the one with the lowest **source-validation BCE** (a proper scoring rule, which sees
# calibration where AUC does not), and training stops once that loss has not improved for 10
# epochs. `cxrlab bench` measures the speed-up over the ten passes (`probe_cached_vs_epoch_ratio`).
#
# ## 5. Run the study, and the same study without pre-training
# `run_study` crosses methods × backbones × seeds, stores every (method, backbone, seed) unit under
# the results folder, and skips finished units when run again, so this cell is fast the second
# time. The same study from a shell: `cxrlab run configs/probe_synthetic.yaml --out DIR`. (If you
# change the config, use a new folder: a folder holding other settings is refused.)
#
# The second run changes one thing, `pretrained: false`: the same probe on randomly initialised
# backbones.

# %%
out = Path(prof.results_dir) / f"{config['name']}_{prof.name}"
res = S.run_study(cfg, out=out, profile=prof)
summary = res.summary()
res_random = S.run_study(S.load_study_config({**config, "name": "02_random_init",
                                              "pretrained": False}),
                         out=out.with_name(out.name + "_random_init"), profile=prof)
print("synthetic data:", res.synthetic, "| units:", len(res.units) + len(res_random.units))

# %%
target = "target_nih" if not REAL else [d for d in summary["domain"].unique() if d != data.source_name][0]
gain = S.variant_gain({"pre-trained": summary, "random init": res_random.summary()},
                      domains=[data.source_name, target])
display(Markdown(f"*{'SYNTHETIC: ' if res.synthetic else ''}AUC macro over the shared labels, %, "
                 "thresholds do not matter for AUC*"), gain)
gains = gain.xs("gain", axis=1, level=1)
claim("a frozen probe on the pre-trained backbone beats the same probe on random init by at "
      "least 10 AUC points, at the source and at the NIH-like target, for every backbone",
      (gains >= 10).all().all(), smallest_gain=float(gains.min().min()),
      **{f"{m} ({d})": float(gains.at[m, d]) for m in gains.index for d in gains.columns})

# %% [markdown]
# The frozen probe reads what pre-training put into the features: from random weights the same
# probe loses more than 10 AUC points everywhere (the claim above prints every gain). Under
# `gpu` the same comparison is exercise 5: ImageNet weights against `pretrained: false`.
#
# ## 6. In-domain vs out-of-domain
# The pre-trained probes, scored on the source's held-out test patients (*in-domain*, grey) and
# on every target hospital (*out-of-domain*). Bars are 95 % intervals from a bootstrap over
# patients. AUC is threshold-free, so it isolates the ranking quality.

# %%
fig = P.plot_in_vs_out(summary, metric="auc_macro", label_space="shared7")
plt.show()
display(Markdown(f"*{'SYNTHETIC: ' if res.synthetic else ''}AUC macro over the shared labels, % "
                 "[95 % interval]*"), S.metric_table(summary, interval=True))

# %% [markdown]
# Is each drop larger than the noise? The source's test patients and a target's are independent
# samples, so the interval of the **drop** adds the two variances (`S.drop_table`). A drop whose
# interval lies above zero is more than sampling noise of the two test sets.

# %%
drops = S.drop_table(summary)
display(drops.round(1))
mean_drop = drops[drops["target"] == S.tables.TARGETS_MEAN].set_index("model")
claim("every backbone loses AUC from the source to the mean of the three targets, by more than "
      "the interval of the drop", mean_drop["beyond_interval"].all(),
      **{f"{m} drop": float(mean_drop.at[m, "drop"]) for m in mean_drop.index},
      **{f"{m} lower bound": float(mean_drop.at[m, "drop_lo"]) for m in mean_drop.index})
worst = drops[drops["target"] != S.tables.TARGETS_MEAN].groupby("target")["drop"].mean()
claim(f"{worst.idxmax()} costs most on average over the backbones", True,
      **{t: float(v) for t, v in worst.items()})

# %% [markdown]
# The synthetic targets differ from the source in acquisition (contrast, noise, resolution),
# population (age, portable AP views) and, at `target_old`, in how a borderline finding is
# labelled (notebook 01); the target that costs most (printed above) is the one whose shift
# touches the most labels.
#
# ## 7. The 14-label pitfall
# The student project averaged F1 and AUC over all **14** NIH labels. But Emphysema, Fibrosis,
# Hernia, Infiltration, Mass, Nodule and Pleural_Thickening do not exist in MIMIC-CXR's label
# space: the model never saw a single label for them. Its scores for them are chance **by
# construction** (here exactly 0.5: the probe's head for those labels never received a
# gradient), yet they fill half of every macro average. The figure scores the very same
# predictions both ways.

# %%
fig = P.plot_label_spaces(summary, threshold="fixed0.5")
plt.show()
fig = P.plot_per_label(res.per_label)
plt.show()

# %%
auc14 = res.per_label.query("domain == @target and threshold_kind == 'tuned_source_val' "
                            "and label in @hidden")["auc"]
claim("the seven labels MIMIC-CXR does not define score AUC 0.5 exactly at the target",
      bool(np.allclose(auc14.dropna(), 0.5)), n_scores=len(auc14), min=float(auc14.min()),
      max=float(auc14.max()))
for space in ("nih14", "shared7"):
    t = S.seed000_table(res.results, label_space=space, domain=target, threshold="fixed0.5")
    display(Markdown(f"*{t.attrs['caption']}*"), t)

# %% [markdown]
# **What the arithmetic says about the published numbers.** The student project's ViT reached a
# macro AUC of 71.7 over 14 labels. *If* seven of them sat at 0.5, as they must for a model trained
# on MIMIC-CXR labels alone, the other seven would need a mean AUC of (14 × 71.7 − 7 × 50) / 7.
# The next cell computes it, and the same for the SupCon ViT's 74.6.

# %%
pub = S.published_seed000_table()
need = {f"{r.setting}, {r.model}": (14 * r._5 - 7 * 50) / 7 for r in pub.itertuples()}
claim("if seven of 14 labels sat at AUC 0.5, the slides' 71.7 (BCE ViT) would need 93.4 on the "
      "other seven, and SupCon ViT's 74.6 would need 99.3", round(need["BCE linear probe, ViT-B/16"], 1) == 93.4
      and round(need["SupCon + linear probe, ViT-B/16"], 1) == 99.3, **need)

# %% [markdown]
# Published MIMIC → NIH models reach a mean AUC of about 0.72 on the shared labels (Cohen et al.
# 2020, section 9), far below 93.4. So the slides' numbers do not fit a model trained on MIMIC-CXR
# labels alone. There is a second clue: the slides' label table (Atelectasis 9,247 train / 2,312
# test … Hernia 182 / 45) is an exact 80/20 split of **NIH's own** label counts, which the
# real NIH metadata shipped with `torchxrayvision` lets us check:

# %%
from cxrlab.data.metadata import load_shipped_metadata

nih = load_shipped_metadata("nih")
slides = {"Atelectasis": (9247, 2312), "Hernia": (182, 45)}
for lab, (tr, te) in slides.items():
    n = int(nih[lab].sum())
    claim(f"{lab}: the slides' {tr:,} + {te:,} is NIH's own count, split 80/20",
          tr + te == n and round(0.8 * n) == tr, nih_count=n, eighty_percent=0.8 * n)

# %% [markdown]
# These are **inferences**, not facts: the slides do not say enough to be sure. One reading that
# fits both clues is that the probe was trained on an NIH split, not on MIMIC-CXR. The course's
# answer is the same either way: score the seven **shared** labels, where a cross-site comparison
# is fair, and show the 14-label number only as the pitfall it is. Everything below uses
# `shared7`, and shows `nih14` only where we compare with the slides.
#
# ## 8. Thresholds: fixed 0.5 vs tuned on source validation
# AUC and mAP rank images; F1 needs a decision, `score >= threshold`. Whether 0.5 is a sensible
# threshold depends on whether the scores are **calibrated** probabilities. To see it, we run
# the probe the student project's way next to ours: bias starting at 0, 10 epochs, the epoch kept
# by validation AUC (which ignores calibration). The embeddings are cached, so this takes seconds.
#
# Per label, the tuned threshold is the one with the best F1 on the **source validation split**
# (`cxrlab.metrics.tune_thresholds`), applied unchanged to every test set. Tuning on the target
# would use the target's labels to make the target look good: that is test-set leakage, and no
# deployed model could do it.

# %%
seed_probe = {"probe_epochs": 10, "probe_lr": 1e-3, "probe_patience": None,
              "probe_select": "val_auc", "probe_init_bias": "zero"}
res_seed = S.run_study(S.load_study_config({**config, "name": "02_seed_probe", **seed_probe}),
                       out=out.with_name(out.name + "_seed_probe"), profile=prof)

def mean_target_f1(summary):
    f1 = summary.query("metric == 'f1_macro' and label_space == 'shared7' and role == 'out-of-domain'")
    return 100 * f1.pivot_table(index="model", columns="threshold", values="value", aggfunc="mean")

f1 = pd.concat({"student project's probe": mean_target_f1(res_seed.summary()),
                "calibrated probe": mean_target_f1(summary)}, axis=1).round(1)
display(Markdown(f"*{'SYNTHETIC: ' if res.synthetic else ''}F1 macro over the shared labels, %, "
                 "mean of the three targets*"), f1)
old, cal = f1["student project's probe"], f1["calibrated probe"]
claim("for the student project's probe, thresholds tuned on source validation beat 0.5 on target "
      "F1 for every backbone", (old["tuned_source_val"] > old["fixed0.5"]).all(),
      **{f"{m} gain": float(old.at[m, "tuned_source_val"] - old.at[m, "fixed0.5"]) for m in old.index})
claim("at the fixed 0.5, the calibrated probe beats the student project's probe for every backbone",
      (cal["fixed0.5"] > old["fixed0.5"]).all(),
      **{m: float(cal.at[m, "fixed0.5"] - old.at[m, "fixed0.5"]) for m in old.index})
claim("for the calibrated probe, tuning moves target F1 less than it moves the student project's",
      ((cal["tuned_source_val"] - cal["fixed0.5"]).abs()
       < (old["tuned_source_val"] - old["fixed0.5"])).all(),
      **{f"{m} change": float(cal.at[m, "tuned_source_val"] - cal.at[m, "fixed0.5"]) for m in cal.index})

# %%
fig = P.plot_thresholds(res_seed.summary(), metric="f1_macro", label_space="shared7")
fig.axes[0].set_title("the student project's probe: " + fig.axes[0].get_title(), fontsize=9)
plt.show()
unit = res.units["unit"].iloc[-1]
thr = pd.read_csv(out / "units" / unit / "thresholds.csv")
print(f"{unit}: thresholds tuned on {int(thr['n_labelled'].max())} source-validation images")
thr[thr["label"].isin(SHARED7)].round(3)

# %% [markdown]
# Read the two tables together. The student project's probe starts every label at 50 % and is
# stopped after 10 short epochs: its scores are not probabilities, so 0.5 misses most rare
# findings, and tuning on source validation recovers a large part of F1 at every target (the
# gains printed above). Our probe's scores are calibrated on the source, so 0.5 already means
# "more likely than not", and tuning changes target F1 by a few points up or down. Why not more?
# A threshold tuned at the source is tuned for the source's prevalence; at a target with other
# prevalences the best cut-off moves, and no source-only procedure can follow it. Labels with
# fewer than 10 validation positives (section 3) get thresholds that are mostly noise.
#
# ## 9. The published numbers, beside ours
# The student project's slides report, for MIMIC-CXR → NIH over **14 labels**, with no confidence
# intervals and no stated threshold (0.5 presumably):

# %%
# NBVAL_CHECK_OUTPUT
print(pub.attrs["caption"])
print("source:", pub.attrs["citation"])
pub

# %% [markdown]
# What is questionable in that protocol, and what this course does instead:
#
# 1. **7 of the 14 labels cannot be learnt** from MIMIC-CXR (section 7): macro F1 over 14 is
#    dominated by impossible labels → score the 7 shared labels.
# 2. **F1 at threshold 0.5** on an uncalibrated probe gives near-zero recall on rare labels
#    (section 8) → a calibrated probe, and per-label thresholds from the source validation
#    split, never the target.
# 3. **SupCon fine-tunes the backbone while the BCE arm stays frozen**, so the comparison mixes
#    the loss with the training budget → notebook 03 adds a BCE fine-tune arm with the same budget.
# 4. **No confidence intervals**, one run → seeds and bootstrap 95 % intervals.
#
# Our numbers in the slides' layout and protocol (14 labels, threshold 0.5) stacked under the
# published ones. Under `ci` ours are SYNTHETIC, from tiny stand-in models: the table shows the
# *format* and the method, not a comparison of values.

# %%
ours = S.seed000_table(res.results, label_space="nih14", domain=target, threshold="fixed0.5")
S.compare_with_published(ours)

# %% [markdown]
# Cohen et al. (2020) measured the same transfer with a DenseNet-121 per label, and concluded
# that much of the cross-site gap comes from **label shift** (each site's labeller defines a
# finding differently), not only from image shift. Their AUROC on NIH (read off the paper's
# heat-map, ±0.02):

# %%
# NBVAL_CHECK_OUTPUT
coh = S.published_cohen2020_table()
print(coh.attrs["caption"])
print("source:", coh.attrs["citation"])
coh

# %%
mine = res.per_label.query("domain == @target and threshold_kind == 'tuned_source_val' and label in @SHARED7")
mine = mine.assign(model=mine["backbone"].map(display_name)).pivot_table(index="label", columns="model", values="auc")
tag = "SYNTHETIC" if res.synthetic else "real"
mine.columns = [f"ours ({tag}, {target}): {c}" for c in mine.columns]
coh.set_index("label")[["train MIMIC (CheXpert labeler)"]].join(mine.round(2))

# %% [markdown]
# ## What we saw
# Every line below was printed by a claim checked in this run (`[claim holds]`); if an output
# stops supporting it, the notebook fails in CI.

# %%
from cxrlab.claims import claims_table

pd.set_option("display.max_colwidth", 120)
claims_table()

# %% [markdown]
# In words (SYNTHETIC, `ci`):
# * pre-training is what a frozen probe reads: the stand-ins beat random init by 10 AUC points
#   or more, at the source and at the NIH-like target;
# * every backbone loses AUC out of its hospital, by more than the interval of the drop;
# * the 14-label average hides seven coin flips, and the published 14-label numbers do not fit a
#   MIMIC-trained model (inference, with the arithmetic);
# * threshold 0.5 fails an uncalibrated probe; a calibrated one is close to its tuned thresholds.
#
# ## What transfers to real data
# * **Transfers:** evaluate on the labels both sites define; tune thresholds (and select epochs)
#   on the source validation split only; calibrate the probe (a prevalence bias and a proper
#   validation loss cost nothing); report intervals, and the drop's own interval; count
#   positives per label before trusting a per-label number.
# * **Does not transfer:** the size of the drops and gains. Real hospitals differ in ways the
#   four synthetic ones do not (labellers, devices, populations all at once), and ImageNet features
#   are not chest X-ray features: Cohen et al. measured 0.60–0.87 per label for MIMIC → NIH.
#   Run this notebook under `gpu` with the real caches to get real numbers.
#
# ## Exercises
# Each exercise has a solution in the hidden cell below it (click to show it); CI runs them.
#
# ### Exercise 1 · Class weights
# Add `"probe_pos_weight": "balanced"` to the config (new results folder) and compare F1 at the
# fixed 0.5 threshold with the calibrated probe. Why does 0.5 now call many more positives?

# %% tags=["solution"] jupyter={"source_hidden": true}
res_bal = S.run_study(S.load_study_config({**config, "name": "02_balanced", "probe_pos_weight": "balanced"}),
                      out=out.with_name(out.name + "_balanced"), profile=prof, verbose=False)
bal = mean_target_f1(res_bal.summary()).round(1)
print(pd.concat({"balanced": bal, "calibrated": cal}, axis=1))
# Balanced weights make every label's positives weigh as much as its negatives, so the probe's
# scores estimate a 50 % prevalence: 0.5 is then near the best cut-off for ranking-balanced
# decisions, but the scores are no longer probabilities of the source's prevalence.

# %% [markdown]
# ### Exercise 2 · A fair 14-label study
# Remove `mask_source_labels` (the synthetic source then labels all 14 findings). Is the `nih14`
# score now a fair one? Which labels gain most?

# %% tags=["solution"] jupyter={"source_hidden": true}
fair = {k: v for k, v in config.items() if k != "mask_source_labels"}
res_fair = S.run_study(S.load_study_config({**fair, "name": "02_fair14"}),
                       out=out.with_name(out.name + "_fair14"), profile=prof, verbose=False)
per = lambda r: r.per_label.query("domain == @target and threshold_kind == 'tuned_source_val'") \
                          .groupby("label")["auc"].mean()
print((per(res_fair) - per(res)).sort_values(ascending=False).round(3).head(8))
# The seven NIH-only labels jump from exactly 0.5 to real AUCs: with labels for them at the
# source, nih14 measures learnable labels and becomes a fair average.

# %% [markdown]
# ### Exercise 3 · Leakage, measured
# Load a unit's `predictions.npz`, tune thresholds on the *target* labels and compute F1 on the
# same target. How much does F1 "improve"? Why is that number worthless?

# %% tags=["solution"] jupyter={"source_hidden": true}
from cxrlab import metrics as M

pred = np.load(out / "units" / unit / "predictions.npz")
k = [list(pred["label_names"]).index(lab) for lab in SHARED7]
y_t, s_t = pred[f"{target}__labels"][:, k], pred[f"{target}__scores"][:, k]
honest = M.multilabel_metrics(y_t, s_t, pred["thresholds_tuned_source_val"][k]).f1_macro
cheat = M.multilabel_metrics(y_t, s_t, M.tune_thresholds(y_t, s_t)).f1_macro
print(f"F1 macro at {target}: thresholds from source val {100 * honest:.1f}, "
      f"tuned on the target itself {100 * cheat:.1f} (leakage: +{100 * (cheat - honest):.1f})")

# %% [markdown]
# ### Exercise 4 · Seeds vs bootstrap
# Run the probe study with seeds 0, 1, 2 and compare the interval over seeds with the bootstrap
# interval of one seed. Which source of variation does each one measure?

# %% tags=["solution"] jupyter={"source_hidden": true}
res3 = S.run_study(S.load_study_config({**config, "name": "02_three_seeds", "seeds": [0, 1, 2]}),
                   out=out.with_name(out.name + "_three_seeds"), profile=prof, verbose=False)
both = pd.concat({"3 seeds (t-interval)": S.metric_table(res3.summary(), interval=True),
                  "seed 0 (bootstrap)": S.metric_table(summary, interval=True)}, axis=1)
print(both[[c for c in both.columns if c[1] in (data.source_name, target)]].to_string())
# The backbones are frozen and pre-trained: seeds only change the probe's minibatch order, so the
# seed interval is tiny; the bootstrap interval measures which patients happened to be tested.

# %% [markdown]
# ### Exercise 5 · How much does pre-training buy, per label?
# Using `res` and `res_random`, compare the per-label AUC at the NIH-like target. (Under `gpu`
# the same cells compare ImageNet weights with `pretrained: false`.)

# %% tags=["solution"] jupyter={"source_hidden": true}
per_label = pd.DataFrame({"pre-trained": per(res), "random init": per(res_random)}).loc[list(SHARED7)]
per_label["gain"] = per_label["pre-trained"] - per_label["random init"]
print(per_label.round(3).sort_values("gain"))
