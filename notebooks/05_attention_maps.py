# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Attention maps: Grad-CAM across models and labels, measured
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cxrlab/cxrlab/blob/main/notebooks/05_attention_maps.ipynb)
#
# The seed project ended on "attention maps are still inconsistent across images and models",
# without a number. Here we draw the same two pictures (one label across models, one model
# across labels), then **measure**: how much of a map lies in the lesion, in the lungs, on a
# shortcut; whether two models agree; how much one model's attention moves between images; and
# whether the map is faithful to what the model uses. Everything here runs on the **synthetic**
# hospitals, where the lesion, the lungs and the shortcut (a chest drain) have exact masks.
#
# What you will learn here:
# 1. Grad-CAM (and HiResCAM) with `cxrlab.explain.cam_maps`: one batched call, one map per
#    image for its own label, ViTs and frozen backbones included;
# 2. attention metrics with intervals: energy share in a region, pointing game, agreement
#    between models, consistency across images, ROAD faithfulness;
# 3. the shortcut: a model trained where a chest drain goes with pneumothorax looks at the
#    drain, one trained without it does not;
# 4. an interactive explorer (ipywidgets) to look for yourself.
#
# Time: `ci` about 2 minutes on a laptop CPU; `cpu` about 10 minutes; `gpu` a few minutes.

# %%
# Colab / a fresh environment: install cxrlab only when it is missing (Colab already has torch)
import importlib.util, subprocess, sys
if importlib.util.find_spec("cxrlab") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                           "cxrlab @ git+https://github.com/cxrlab/cxrlab.git"])

# %%
# %matplotlib inline
from cxrlab.claims import claim
from pathlib import Path

import numpy as np
import torch
from IPython.display import display

from cxrlab.course import setup
from cxrlab.data.dataset import load_arrays, load_masks
from cxrlab.data.synthetic import ensure_synthetic_cache
from cxrlab.engine import fit, predict_scores
from cxrlab.explain import analysis as A
from cxrlab.explain import plots as XP
from cxrlab.explain import cam_maps
from cxrlab.methods.registry import create_algorithm
from cxrlab.metrics import masked_auc_macro
from cxrlab.models import create_backbone

prof = setup()
if prof.name == "ci":
    torch.set_num_threads(1)  # tiny models on a shared CPU: more threads only wait on each other
N_SOURCE = {"ci": 1024, "cpu": 6000}.get(prof.name, 20000)  # source images (70 % train)
EPOCHS = {"ci": 10, "cpu": 20}.get(prof.name, 20)  # the two ERM models of section 4
EPOCHS_OTHERS = {"ci": 6, "cpu": 20}.get(prof.name, 20)  # the other backbones (sections 2-3)
LABELS = ["Cardiomegaly", "Effusion", "Pneumothorax", "Atelectasis"]
print(f"{N_SOURCE} source images, {EPOCHS} / {EPOCHS_OTHERS} epochs")

# %% [markdown]
# ## 1. Data and models
# Two versions of the synthetic **source** hospital, identical except for the shortcut: with
# `shortcut=True`, 90 % of pneumothorax images (and 5 % of the others) carry a chest drain
# outside the lungs. Each model is an ERM model: the backbone fine-tuned end to end with BCE
# (`bce_finetune`) on four labels. Checkpoints are kept under `CXRLAB_HOME`, so a re-run only
# loads them.

# %%
SIZE = prof.image_size
caches = {sc: ensure_synthetic_cache(Path(prof.data_dir) / f"attention_source_shortcut{int(sc)}",
                                     hospitals=["source"], n_per_hospital=N_SOURCE,
                                     image_size=SIZE, seed=0, shortcut=sc)
          for sc in (False, True)}


def train_erm(backbone: str, shortcut: bool, epochs: int = EPOCHS, seed: int = 0):
    """ERM (BCE fine-tune) on the source train split; cached checkpoint, fast on a re-run."""
    cache = caches[shortcut]
    x, y = load_arrays(cache, cache.select(split="train"), LABELS)
    alg = create_algorithm("bce_finetune", create_backbone(backbone, image_size=SIZE, seed=seed),
                           len(LABELS), {"augment": "none", "backbone_lr_scale": 1.0,
                                         "pos_weight": 4.0})
    out = Path(prof.checkpoint_dir) / "05_attention" / f"{backbone}_shortcut{int(shortcut)}_e{epochs}_s{seed}"
    fit(alg, (x, y), epochs=epochs, batch_size=64, lr=3e-3, seed=seed, out_dir=out,
        verbose=False, device=prof.device)
    return alg.cpu().eval()


models = {bb: train_erm(bb, shortcut=False, epochs=EPOCHS if i == 0 else EPOCHS_OTHERS)
          for i, bb in enumerate(prof.backbones)}
erm_shortcut = train_erm(prof.backbones[0], shortcut=True)
print("trained:", list(models), "+ ERM with the shortcut")

# %% [markdown]
# ## 2. One label across models, one model across labels (the seed's two slides)
# Test images of the clean source hospital that are positive for **Effusion**; each row is a
# model, each map explains that model's Effusion logit. The white outline is the lesion mask.

# %%
clean = caches[False]
test = clean.select(split="test")
y_test = clean.labels(LABELS, test)
label = "Effusion"
pos = test[y_test[:, LABELS.index(label)] == 1][:6]
reg = A.region_masks(clean, pos, label)
cams_by_model = {bb: cam_maps(m, reg["images"], LABELS.index(label)) for bb, m in models.items()}
fig = XP.plot_cam_grid(reg["images"], cams_by_model, col_titles=[f"row {r}" for r in pos],
                       contours={"lesion": reg["lesion"]},
                       title=f"Grad-CAM of '{label}' across models (SYNTHETIC)")

# %%
model0 = prof.backbones[0]
multi = test[np.nansum(y_test, 1) >= 1][:6]
reg_multi = A.region_masks(clean, multi)
cams_by_label = {lab: cam_maps(models[model0], reg_multi["images"], j) for j, lab in enumerate(LABELS)}
titles = [", ".join(l[:5] for l, v in zip(LABELS, yy) if v == 1) for yy in clean.labels(LABELS, multi)]
fig = XP.plot_cam_grid(reg_multi["images"], cams_by_label, col_titles=titles,
                       title=f"Grad-CAM of {model0} across labels (SYNTHETIC; titles: true labels)")

# %% [markdown]
# ## 3. The numbers behind the pictures
# On 48 Effusion-positive test images: where each model's map lies (energy share inside the
# lesion mask and inside the lungs, pointing game = the map's peak inside the lesion), how far
# two models agree (Spearman correlation of the maps, IoU of their top-10 % regions), and how
# much each model's map moves between images (spread of its centre of mass, in lung
# half-widths). Intervals: 95 % bootstrap over images.

# %%
pos48 = test[y_test[:, LABELS.index(label)] == 1][:48]
r48 = A.region_masks(clean, pos48, label)
df, cams48 = A.attention_table(models, r48["images"], LABELS.index(label), lung=r48["lung"],
                               lesion=r48["lesion"], ids=pos48)
summary = A.summarize(df, columns=("share_lesion", "share_lung", "pointing_lesion"),
                      n_boot=prof.bootstrap)
display(summary)
agree = A.agreement_table(cams48, n_boot=prof.bootstrap)
display(agree)
spread = A.consistency_table(df, n_boot=prof.bootstrap)
display(spread)
lesion_area = float(r48["lesion"].mean())
print(f"the lesion covers {lesion_area:.1%} of the image on average")

# %%
rc = agree[agree.metric == "rank_corr"].set_index(["model_a", "model_b"])["mean"]
iou = agree[agree.metric == "top10_iou"].set_index(["model_a", "model_b"])["mean"]
sp = spread.set_index("model")["spread"]
sh = summary[summary.metric == "share_lesion"].set_index("model")["mean"]
lung_area = float(r48["lung"].mean())
assert rc.max() < 0.8 and iou.max() < 0.5, (rc, iou)
assert sp.max() > 2 * sp.min(), sp
assert (sh < 3 * lesion_area).all(), (sh, lesion_area)
print(f"rank correlation between two models' maps: {rc.min():.2f} to {rc.max():.2f}; "
      f"top-10 % IoU {iou.min():.2f} to {iou.max():.2f}")
print(f"centre-of-mass spread: {sp.idxmin()} {sp.min():.2f}, {sp.idxmax()} {sp.max():.2f} lung half-widths")
print(f"energy in the lesion: {sh.min():.1%} to {sh.max():.1%} of each map, for a lesion covering "
      f"{lesion_area:.1%} of the image (lungs: {lung_area:.1%})")

# %% [markdown]
# What the numbers say (printed above, all SYNTHETIC):
# * **Agreement**: two models' maps of the same image and label correlate only partly (rank
#   correlation well below 0.8) and their top-10 % regions overlap by less than half.
# * **Consistency** differs between models: the centre of one model's map moves between images
#   more than twice as much as another's. The seed's "inconsistent across images" is now a
#   number per model, with an interval.
# * **Localisation** is weak: less than three times the lesion's own share of the image lies in
#   the lesion. These models were trained for seconds on 700 images; attention maps of a model
#   that classifies well need not point at the finding.
#
# ## 4. The shortcut: does ERM look at the drain?
# Test images of the *shortcut* source that carry the drain. Both ERM models explain their
# Pneumothorax logit; we compare the energy share on the drain and inside the lungs.

# %%
sc_cache = caches[True]
sc_test = sc_cache.select(split="test")
with_drain = sc_test[sc_cache.manifest["shortcut_marker"].to_numpy()[sc_test] == 1]
rs = A.region_masks(sc_cache, with_drain, "Pneumothorax")
erm = {"ERM, no shortcut": models[model0], "ERM, shortcut": erm_shortcut}
df_sc, cams_sc = A.attention_table(erm, rs["images"], LABELS.index("Pneumothorax"),
                                   lung=rs["lung"], lesion=rs["lesion"], shortcut=rs["shortcut"],
                                   ids=with_drain)
sum_sc = A.summarize(df_sc, n_boot=prof.bootstrap)
display(sum_sc)
drain_area = float(rs["shortcut"].mean())
fig = XP.plot_attention_shares(sum_sc, title="Pneumothorax Grad-CAM on drain images (SYNTHETIC)")
print(f"{len(with_drain)} test images with a drain; the drain covers {drain_area:.1%} of the image, "
      f"the lungs {float(rs['lung'].mean()):.1%}")

# %%
s = sum_sc.set_index(["model", "metric"])
drain_sc, drain_clean = s.loc[("ERM, shortcut", "share_shortcut")], s.loc[("ERM, no shortcut", "share_shortcut")]
assert drain_sc["lo"] > drain_clean["hi"], (drain_sc.to_dict(), drain_clean.to_dict())
assert drain_sc["mean"] > 3 * drain_area, (drain_sc["mean"], drain_area)
lung_sc, lung_clean = s.loc[("ERM, shortcut", "share_lung")], s.loc[("ERM, no shortcut", "share_lung")]
assert lung_sc["lo"] < lung_clean["hi"] and lung_clean["lo"] < lung_sc["hi"], (lung_sc, lung_clean)
print(f"share on the drain: ERM with shortcut {drain_sc['mean']:.2f} [{drain_sc['lo']:.2f}, {drain_sc['hi']:.2f}] "
      f"vs without {drain_clean['mean']:.2f} [{drain_clean['lo']:.2f}, {drain_clean['hi']:.2f}]; "
      f"the drain is {drain_area:.1%} of the image; inside the lungs {lung_sc['mean']:.2f} vs "
      f"{lung_clean['mean']:.2f} (intervals overlap)")

# %% [markdown]
# The model trained with the shortcut puts several times more of its map on the drain than the
# one trained without it (intervals disjoint), and more than three times the drain's share of
# the image: it learnt the tube. Inside the lungs the two put about the same share: the drain's
# energy comes from elsewhere in the image, so "inside the lungs" alone would not have shown the
# shortcut. Would a masking method move this number back down? The next cells try.

# %%
fig = XP.plot_cam_grid(rs["images"][:6], {k: v[:6] for k, v in cams_sc.items()},
                       contours={"drain": rs["shortcut"][:6], "lungs": rs["lung"][:6]},
                       title="Pneumothorax Grad-CAM, drain images (SYNTHETIC)")

# %% [markdown]
# ### Do RRR and ActDiff move it?
# Seed 002's remedy: tell the model where it may look. RRR penalises input gradients outside the
# allowed region; ActDiff asks the features of an image and of a copy whose outside pixels are
# shuffled to agree (`cxrlab.methods.rrr`, `cxrlab.methods.actdiff`; notebook 04 has the
# full study). Both are trained here on the *shortcut* source with **lung-periphery** masks, the
# kind the paper found to help, at the same budget as ERM, and explained on the same drain images.

# %%
def train_masked(method: str, lam: float, epochs: int = EPOCHS, seed: int = 0):
    """RRR / ActDiff with lung-periphery masks on the shortcut source; cached like train_erm."""
    cache = caches[True]
    rows = cache.select(split="train")
    x, y = load_arrays(cache, rows, LABELS)
    data = {"image": x, "labels": y, **load_masks(cache, rows)}
    alg = create_algorithm(method, create_backbone(prof.backbones[0], image_size=SIZE, seed=seed),
                           len(LABELS), {"lam": lam, "mask": "lung_periphery",
                                         "backbone_lr_scale": 1.0, "pos_weight": 4.0})
    out = Path(prof.checkpoint_dir) / "05_attention" / f"{method}_lam{lam}_e{epochs}_s{seed}"
    fit(alg, data, epochs=epochs, batch_size=64, lr=3e-3, seed=seed, out_dir=out,
        verbose=False, device=prof.device)
    return alg.cpu().eval()


masked = {"RRR, periphery": train_masked("rrr", 0.1), "ActDiff, periphery": train_masked("actdiff", 0.1)}
df_m, _ = A.attention_table(masked, rs["images"], LABELS.index("Pneumothorax"), lung=rs["lung"],
                            lesion=rs["lesion"], shortcut=rs["shortcut"], ids=with_drain)
sum_m = A.summarize(df_m, n_boot=prof.bootstrap)
xt, yt = load_arrays(sc_cache, sc_test, LABELS)
ptx = LABELS.index("Pneumothorax")
auc_ptx = {name: masked_auc_macro(yt.numpy()[:, ptx], predict_scores(m, (xt, yt))[0][:, ptx])
           for name, m in {**erm, **masked}.items()}
display(sum_m[sum_m["metric"].isin(["share_shortcut", "share_lung"])])
print("pneumothorax AUC on the shortcut source's test split:",
      {k: round(v, 3) for k, v in auc_ptx.items()})

# %%
sm = sum_m.set_index(["model", "metric"])
rrr_drain, ad_drain = sm.loc[("RRR, periphery", "share_shortcut")], sm.loc[("ActDiff, periphery", "share_shortcut")]
# RRR keeps (at least) ERM's attention on the drain ...
assert rrr_drain["lo"] > drain_clean["hi"] and rrr_drain["mean"] >= drain_sc["lo"], (rrr_drain, drain_sc)
# ... and ActDiff leaves a usable map on only a minority of the drain images
assert ad_drain["n"] < 0.5 * len(with_drain), (ad_drain["n"], len(with_drain))
assert auc_ptx["ERM, shortcut"] > auc_ptx["ERM, no shortcut"] + 0.2, auc_ptx
print(f"share on the drain: RRR {rrr_drain['mean']:.2f} [{rrr_drain['lo']:.2f}, {rrr_drain['hi']:.2f}] "
      f"vs ERM with shortcut {drain_sc['mean']:.2f} [{drain_sc['lo']:.2f}, {drain_sc['hi']:.2f}]; "
      f"ActDiff gives a non-flat pneumothorax map on {int(ad_drain['n'])} of {len(with_drain)} images")

# %% [markdown]
# **What this shows, and what it does not.** Here the masks do *not* pull Grad-CAM off the drain:
# RRR with lung-periphery masks puts at least as much energy on the drain as ERM does, and
# ActDiff's pneumothorax logit barely depends on the image at all on most drain images (its map
# is flat, so no share can be computed). The pneumothorax AUCs above say why the contrast is
# hard: without the drain, these tiny models trained for seconds on 700 images hardly detect
# pneumothorax at all, so a model told to ignore the drain has little else to use. This agrees
# with the masking study's own measurement (notebook 04): RRR's target gains did not come
# from dropping the shortcut. A larger source, pre-trained backbones or another λ may change it;
# notebook 04 lists what we tried.

# %% [markdown]
# ## 5. Is the map faithful? ROAD
# Remove And Debias (Rong et al. 2022, from `pytorch_grad_cam`): replace the pixels a map ranks
# highest by a noisy interpolation of their neighbours and see the logit fall; removing the
# lowest-ranked first should hurt less. `lerf - morf` > 0 means faithful; random maps are the
# baseline.

# %%
faith = A.faithfulness_table({"ERM, shortcut": erm_shortcut}, rs["images"],
                             LABELS.index("Pneumothorax"), {"ERM, shortcut": cams_sc["ERM, shortcut"]},
                             n_boot=prof.bootstrap)
display(faith)
f = faith.set_index("maps")
assert f.loc["cam", "mean"] > f.loc["random", "mean"], faith
print(f"ROAD faithfulness: Grad-CAM {f.loc['cam', 'mean']:.2f} [{f.loc['cam', 'lo']:.2f}, {f.loc['cam', 'hi']:.2f}] "
      f"vs random maps {f.loc['random', 'mean']:.2f} [{f.loc['random', 'lo']:.2f}, {f.loc['random', 'hi']:.2f}]")

# %% [markdown]
# ## 6. Explore
# The static figure first (it is what a PDF, GitHub or nbval shows), then the explorer. In
# **Colab**, run `from google.colab import output; output.enable_custom_widget_manager()` once
# before the widget cell; JupyterLab needs nothing.

# %%
from cxrlab.explain.widgets import CamExplorer

explorer_models = {**{f"{k} (no shortcut)": v for k, v in models.items()},
                   "tiny ERM (shortcut)": erm_shortcut}
explorer = CamExplorer(sc_cache, explorer_models, LABELS,
                       rows={"source (drain images)": with_drain[:24],
                             "source (all test)": sc_test[:24]})
explorer.set(label="Pneumothorax", model="tiny ERM (shortcut)")
fig = explorer.static_figure()

# %%
explorer.widget()

# %% [markdown]
# ## Exercises
# The solution is in the hidden cell below the exercise (click to show it); CI runs it.
#
# ### Exercise 1 · Does the CAM method matter?
# Compute the maps of section 4 again with `method="hirescam"` (the element-wise product of
# gradient and activation, instead of Grad-CAM's channel weights = the *mean* gradient), for the
# CNN and for the ViT. Before you run it: for `tiny_cnn`, whose last feature map goes through
# global average pooling and a linear head, what do you expect?

# %% tags=["solution"] jupyter={"source_hidden": true}
imgs6 = rs["images"][:6]
t_ptx = LABELS.index("Pneumothorax")
gap = {name: float(np.abs(cam_maps(m, imgs6, t_ptx) - cam_maps(m, imgs6, t_ptx, method="hirescam")).max())
       for name, m in {"tiny_cnn (shortcut)": erm_shortcut, "tiny_vit": models["tiny_vit"]}.items()}
claim("HiResCAM and Grad-CAM give the same maps for the CNN (global average pooling) and "
      "different ones for the ViT", gap["tiny_cnn (shortcut)"] < 1e-4 and gap["tiny_vit"] > 0.05,
      **gap)
# With global average pooling, the gradient of the logit with respect to channel k is the same
# at every position (head weight / number of positions), so its mean *is* the gradient:
# HiResCAM and Grad-CAM give identical maps for the CNN. A ViT's token gradients differ from
# patch to patch, so there the two methods differ.

# %% [markdown]
# ## What we saw
# * Different models' maps of the same image and label agree only partly (rank correlation below
#   0.8, top-10 % IoU below 0.5), one model's attention moves between images more than twice as
#   much as another's, and little of any map lies in the lesion (section 3).
# * The ERM model trained with the chest-drain shortcut puts several times more Grad-CAM energy
#   on the drain than the one trained without it, with disjoint 95 % intervals (section 4).
# * RRR with lung-periphery masks does not move that energy off the drain here, and ActDiff's
#   pneumothorax maps are mostly flat (section 4): on this small synthetic setup the masking
#   methods do not cure the shortcut in the model's attention.
# * HiResCAM equals Grad-CAM for a CNN with global average pooling, and differs for a ViT
#   (exercise).
# * ROAD: removing what Grad-CAM ranks first lowers the logit more than for random maps
#   (section 5), so these maps do say something about what the model uses.
#
# All numbers are SYNTHETIC: they show how the measurements behave, not how a real model looks.
#
# ## What transfers to real data
# * Real images have no drain mask, but SIIM-ACR has pneumothorax masks and CheXmask lung masks:
#   the lesion and lung shares, the pointing game, agreement and consistency all apply as is.
# * Shortcut audits need a mask of the suspected shortcut (drains, markers, text): draw or
#   segment a few, then measure the share as here.
# * Use `gpu` profile models (ResNet-50, EfficientNet-B0, ViT-B/16): `cam_maps` picks their layer
#   from `cxrlab.explain.layers`; pass `target_layers=` for anything else.
