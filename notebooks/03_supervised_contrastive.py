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
# # 03 · Supervised contrastive learning, and the control arm seed 000 lacked
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cxrlab/cxrlab/blob/main/notebooks/03_supervised_contrastive.ipynb)
#
#
# Seed 000's headline: pre-training the backbone with a **supervised contrastive** loss (SupCon,
# Khosla et al. 2020) and then fitting the same linear probe beat the frozen BCE probe on every
# backbone (MIMIC-CXR → NIH). But the SupCon arm *trained the backbone* and the BCE arm did not:
# the comparison mixed the loss with the training budget. This notebook runs SupCon, adds the
# missing **BCE fine-tune** arm with exactly the same budget, and reports all three in seed 000's
# table layout — with confidence intervals.
#
# What you will learn here:
# 1. the SupCon loss: its formula, multi-label positives, the no-label diagonal, anchors without
#    positives;
# 2. augmentations for radiographs (and why there is no horizontal flip);
# 3. SupCon pre-training + linear probe, vs a BCE fine-tune with the same epochs, batch size and
#    augmentations;
# 4. seed 000's table with 95% intervals (bootstrap over patients, or over seeds), beside the
#    published numbers.
#

# %%
# Colab / a fresh environment: install cxrlab only when it is missing (Colab already has torch)
import importlib.util, subprocess, sys
if importlib.util.find_spec("cxrlab") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                           "cxrlab @ git+https://github.com/cxrlab/cxrlab.git"])

# %%
# %matplotlib inline
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from cxrlab import study as S
from cxrlab.course import setup
from cxrlab.models import display_name
from cxrlab.study import plots as P

prof = setup()

# %% [markdown]
# ## 1. The SupCon loss
# Each image $b$ of a batch is augmented twice; each of the $N = 2B$ views goes through the
# backbone and a small projection MLP, and is L2-normalised to a unit vector $z$. Every view $i$
# is an *anchor*. With $A(i)$ all other views of the batch and $P(i) \subset A(i)$ its positives,
#
# $$
# \ell_i = -\frac{\tau}{\tau_{base}}\;\frac{1}{|P(i)|}\sum_{p \in P(i)}
# \log\frac{\exp(z_i\cdot z_p/\tau)}{\sum_{a\in A(i)}\exp(z_i\cdot z_a/\tau)},\qquad
# \mathcal{L} = \frac{1}{N}\sum_i \ell_i .
# $$
#
# The loss pulls each anchor towards its positives and away from everything else in the batch.
# Choices that change the numbers (`cxrlab.losses.supcon.SupConLoss`):
#
# * **Temperature** $\tau = 0.1$; the reference code (SupContrast) scales by $\tau/\tau_{base}$ with
#   $\tau_{base} = 0.07$, and so do we.
# * **Self-contrast** is removed: $i \notin A(i)$, so a view is never its own positive or negative.
# * **Multi-label positives** (seed 000's rule): $p$ is a positive of $i$ when the two images
#   **share at least one label**. A missing label (NaN) is never "shared".
# * **The diagonal.** An image with *no* positive label shares nothing with anyone — but its own
#   other view is still a positive: the label mask's diagonal is set to 1. Without that, a
#   normal radiograph would have no positive at all.
# * **Anchors with zero positives** (possible with one view only) contribute 0 — never
#   $0/0 = $ NaN.

# %%
# NBVAL_CHECK_OUTPUT
from cxrlab.losses.supcon import SupConLoss, positive_weights

nan = float("nan")
labels = torch.tensor([[1, 0, 0],      # image 0: Effusion
                       [1, 1, 0],      # image 1: Effusion + Edema
                       [0, 0, 1],      # image 2: Pneumothorax
                       [0, 0, 0],      # image 3: no finding
                       [nan, 1, 0]])   # image 4: Edema, Effusion not labelled
pos = positive_weights(labels, labels, positives="any")     # share >= 1 label
pos.fill_diagonal_(1)                                        # the same image (other view) is always positive
pd.DataFrame(pos.int().numpy(), index=[f"image {i}" for i in range(5)],
             columns=[f"image {i}" for i in range(5)])

# %%
loss_fn = SupConLoss(temperature=0.1, base_temperature=0.07, positives="any")
g = torch.Generator().manual_seed(0)
two_views = torch.randn(5, 2, 16, generator=g)       # [images, views, dim]
one_view = two_views[:, :1]                           # image 3 then has no positive at all
print(f"two views: loss {loss_fn(two_views, labels).item():.3f}")
print(f"one view:  loss {loss_fn(one_view, labels).item():.3f} (finite: image 3's anchor adds 0)")

# %% [markdown]
# ## 2. Two views of a radiograph
# What may differ between two views of one image should be what differs between hospitals —
# exposure, contrast curve, noise, blur, positioning — while anatomy and findings stay. So:
# random resized crops (70–100% of the area), small rotations and shifts, brightness / contrast /
# gamma jitter, noise and blur (`cxrlab.augment`, batched on the device).
#
# **No horizontal flip.** Chest anatomy is lateralised: the heart and aortic knob sit on the
# left, the liver and the higher hemidiaphragm on the right, and burned-in "L"/"R" markers say
# which side is which. A flipped radiograph is an image of dextrocardia that the data set does not
# contain; asking the encoder to treat it as the same image teaches invariance to the very
# left/right cues that separate findings. Flips are standard for photographs, not here.

# %%
# NBVAL_CHECK_OUTPUT
from cxrlab.augment import STRENGTHS

cfg_default = STRENGTHS["default"]
print(cfg_default)
print("horizontal flip:", cfg_default.hflip)

# %% [markdown]
# ## 3. The study: the same data as notebook 02, three arms
# * **BCE linear probe** — frozen backbone, cached embeddings, linear probe (notebook 02).
# * **SupCon + linear probe** — the backbone and a projection head are trained with SupCon on two
#   views per image; the head is dropped, the backbone frozen, and the same linear probe is fitted
#   on its embeddings.
# * **BCE fine-tune (control)** — the backbone and a linear head trained end to end with BCE on
#   one augmented view per image: the **same epochs, batch size, learning rate, optimiser and
#   augmentations** as SupCon. Only the loss differs, so a difference between these two arms is
#   the loss's doing.
#
# Model selection and thresholds use the source validation split only (the fine-tune keeps its
# best epoch by source-validation AUC; both probes pick their epoch there too).

# %%
from cxrlab.data.protocols import load_protocol

def real_caches_ready(protocol: str) -> bool:
    paths = load_protocol(protocol).cache_paths(prof.data_dir).values()
    return all((p / "meta.json").exists() for p in paths)

hparams = {"supcon": {"temperature": 0.1, "base_temperature": 0.07, "positives": "any",
                      "augment": "default"},
           "bce_finetune": {"augment": "default", "backbone_lr_scale": 1.0}}
methods = ["bce_probe", "supcon", "bce_finetune"]
# SupCon and the fine-tune share ONE budget; on the tiny ci data 8 short epochs (about a
# minute on a laptop CPU) let both arms learn something, the gpu profile uses its 10
budget = max(prof.finetune_epochs, 8)
REAL = prof.data == "real" and real_caches_ready("mimic_to_nih")
if REAL:
    config = {"name": "03_supcon", "protocol": "mimic_to_nih", "label_spaces": ["shared7", "nih14"],
              "methods": methods, "finetune_epochs": budget, "lr": 1e-4, "probe_epochs": 10,
              "hparams": hparams}
else:
    if prof.data == "real":
        print("no prepared MIMIC-CXR / NIH caches found: using the synthetic hospitals")
    config = {"name": "03_supcon", "protocol": "synthetic", "target_split": "all",
              "mask_source_labels": "mimic", "label_spaces": ["shared7", "nih14"],
              "methods": methods, "finetune_epochs": budget, "probe_epochs": 30, "probe_lr": 3e-3,
              "hparams": hparams}
cfg = S.load_study_config(config)
print(f"{cfg.name}: {cfg.protocol} protocol, methods {list(cfg.methods)}, "
      f"{cfg.finetune_epochs} epochs for both engine arms")

# %%
from cxrlab.augment import two_views

data = S.load_study_data(cfg, prof)          # the synthetic cache of notebook 02, reused
s = data.sets["train"]
imgs = torch.from_numpy(np.asarray(s.cache.images[np.sort(s.rows[:4])]))[:, None]
views = two_views(imgs, strength="default", generator=torch.Generator().manual_seed(0))
fig, axes = plt.subplots(3, 4, figsize=(6, 4.6))
for j in range(4):
    for i, (img, title) in enumerate([(imgs[j, 0], "original"), (views[j, 0, 0], "view 1"),
                                      (views[j, 1, 0], "view 2")]):
        axes[i, j].imshow(img.numpy(), cmap="gray", vmin=0, vmax=255)
        axes[i, j].set_title(title, fontsize=8)
        axes[i, j].axis("off")
tag = "SYNTHETIC " if data.synthetic else ""
fig.suptitle(f"{tag}source images and two random views (default strength, no flip)", fontsize=9)
plt.show()

# %% [markdown]
# Now the study: 3 methods × the profile's backbones × its seeds. Each unit is stored as soon as
# it finishes and skipped when the cell runs again; an engine run that is interrupted resumes
# from its last epoch checkpoint. The same run from a shell:
# `cxrlab run configs/study_ci.yaml --out DIR`.

# %%
out = Path(prof.results_dir) / f"{config['name']}_{prof.name}"
res = S.run_study(cfg, out=out, profile=prof)
print("synthetic data:", res.synthetic, "| units:", len(res.units))

# %% [markdown]
# ### Same budget, checked
# The two engine arms saw the same number of images, for the same epochs. (SupCon processes two
# views per image, so it spends about twice the forward/backward compute per step — the budget
# matched here is data, epochs and optimiser steps, as in the seed.)

# %%
rows = []
for u in res.units.itertuples():
    info = S.unit_summary(out / "units" / u.unit)["info"]
    rows.append({"method": u.method, "backbone": u.backbone, "seed": u.seed,
                 "engine epochs": info.get("fit_epochs", 0), "images seen": info.get("images_seen", 0),
                 "fine-tune best epoch": info.get("fit_best_epoch"),
                 "probe epoch kept": info.get("probe_best_epoch")})
budget_table = pd.DataFrame(rows)
budget_table

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for u in res.units.itertuples():
    hist = S.unit_summary(out / "units" / u.unit)["info"].get("fit_history")
    if not hist:
        continue
    h = pd.DataFrame(hist)
    if u.method == "supcon":
        axes[0].plot(h["epoch"], h["loss"], marker="o", label=display_name(u.backbone))
    else:
        axes[1].plot(h["epoch"], h["val_auc_macro"], marker="o", label=display_name(u.backbone))
axes[0].set(title="SupCon training loss", xlabel="epoch")
axes[1].set(title="BCE fine-tune: source-validation AUC", xlabel="epoch")
for ax in axes:
    ax.legend(fontsize=7, frameon=False)
fig.suptitle(f"{tag}training curves", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# A curve that stays flat means that arm's backbone barely moved from its starting point. Under
# `ci` this often happens to the tiny ViT: transformers trained from random weights need far more
# images (and usually a learning-rate warm-up) than 258 synthetic radiographs in 8 short epochs.
# Keep that in mind when reading its rows below.
#
# ## 4. In-domain vs out-of-domain, all three arms

# %%
summary = res.summary()
fig = P.plot_in_vs_out(summary, metric="auc_macro", label_space="shared7")
plt.show()
auc = summary.query("metric == 'auc_macro' and label_space == 'shared7' and threshold == 'tuned_source_val'")
display(Markdown(f"*{'SYNTHETIC' if res.synthetic else 'real data'}: AUC macro over the shared labels, %; "
                 f"the interval of each bar is in the figure*"))
(100 * auc.pivot_table(index=["setting", "model"], columns="domain", values="value", sort=False)).round(1)

# %% [markdown]
# ## 5. Seed 000's table, with intervals
# Seed 000 reported one number per cell. Here every cell is **mean [95% interval]** in %:
#
# * with one training seed (the `ci` profile), the interval is a **bootstrap over patients** of
#   the test set (`cxrlab.metrics.bootstrap_ci`, the profile's number of resamples): how much the
#   number would move with another sample of patients from the same hospital;
# * with several seeds (`cxrlab run ... --seeds 0,1,2`, or the `cpu` / `gpu` profiles), the mean
#   over seeds and a **t-interval over seeds**: how much it moves with another training run.
#
# Neither says anything about *another hospital* — that is what the targets are for. First the
# seed's own protocol (14 labels, threshold 0.5) at the NIH-like target, stacked under the
# published numbers:

# %%
target = [d for d in summary["domain"].unique() if d != data.source_name][0]
seed_protocol = S.seed000_table(res.results, label_space="nih14", domain=target, threshold="fixed0.5")
display(Markdown(f"*{seed_protocol.attrs['caption']}*"))
S.compare_with_published(seed_protocol)

# %%
# NBVAL_CHECK_OUTPUT
pub = S.published_seed000_table()
print(pub.attrs["caption"])
print("source:", pub.attrs["citation"])
pub

# %% [markdown]
# And the honest version: the seven shared labels, thresholds tuned on source validation, at
# every target. Under `ci` these are SYNTHETIC numbers from tiny random-init networks trained for a
# minute — they show the method, not which method wins on real data.

# %%
for domain in summary["domain"].unique():
    t = S.seed000_table(res.results, label_space="shared7", domain=domain, threshold="tuned_source_val")
    display(Markdown(f"*{t.attrs['caption']}*"), t)

# %% [markdown]
# How to read it:
#
# * Compare **SupCon + probe** with the **BCE fine-tune** — the arm with the same budget — not
#   only with the frozen probe. If SupCon beats the frozen probe but not the fine-tune, the gain
#   came from training the backbone, not from the contrastive loss.
# * Overlapping intervals do not prove "no difference", and separate intervals of two arms
#   evaluated on the same patients are conservative: for a claim, bootstrap the *difference* on
#   the same resamples (exercise 4).
# * Seed 000's 14-label, threshold-0.5 numbers sit in the first table only to show the format;
#   the shared-label, tuned-threshold table is the one to report.

# %%
fig = P.plot_thresholds(summary, metric="f1_macro", label_space="shared7", method="supcon")
plt.show()

# %% [markdown]
# ## Exercises
# 1. **Which positives?** Rerun with `hparams: {supcon: {positives: jaccard}}` (images weighted
#    by label overlap) in a new results folder. Does it change the out-of-domain AUC beyond the
#    intervals?
# 2. **Temperature.** Try τ = 0.05 and τ = 0.5. What happens to the loss scale, and to the probe?
# 3. **An unfair budget.** Give SupCon twice the epochs of the fine-tune (two studies in two
#    folders: `methods: [supcon]` with `finetune_epochs: 16`, and `methods: [bce_finetune]` with
#    8). Which arm "wins" now, and why is that comparison meaningless?
# 4. **A paired bootstrap.** Load `units/supcon__*/predictions.npz` and
#    `units/bce_finetune__*/predictions.npz` of one backbone, draw the same patient resamples for
#    both (`cxrlab.metrics.bootstrap_ci` with the same `seed` and `groups`), and compute a 95%
#    interval of the AUC *difference* at a target. Is it narrower than the two separate intervals
#    suggest?
# 5. **Seeds.** `cxrlab run configs/study_ci.yaml --out results/study_ci --seeds 0,1,2`, then
#    `cxrlab report results`: how do the seed intervals compare with the bootstrap ones?
# 6. **Flips.** Look at `cxr_train_augment(64, hflip=True)` applied to a few source images. Which
#    visible cues does a flip destroy? (Markers, the heart's side.)
