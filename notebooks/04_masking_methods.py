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
# # 04 · Telling a model where to look: RRR and ActDiff with masks
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cxrlab/cxrlab/blob/main/notebooks/04_masking_methods.ipynb)
#
# Seed 002 (pneumothorax; source CXR-P, a SIIM-ACR subset; four shifted targets) asks whether
# a classifier generalises better when it is *told where to look*. Two methods add a penalty
# to the loss that depends on a mask per image:
#
# * **RRR** ("right for the right reasons", Ross et al. 2017) penalises the *input gradient*
#   of the log-probabilities outside the mask;
# * **ActDiff** (Viviano et al. 2021) penalises the change of the network's *activations* when
#   every pixel outside the mask is shuffled.
#
# Its finding: the **right mask** matters. Lesion ("abnormality") masks made both methods
# *worse* than plain ERM on the targets; a mask of the **lung periphery** (where
# pneumothoraces lie) kept them level with ERM, and with more source data ActDiff beat it.
#
# What you will learn here:
# 1. four masks of the same images: abnormality, scaled abnormality, lung periphery, lung;
# 2. the two penalties, in code you can check;
# 3. a study on the synthetic hospitals **with a shortcut** (a chest drain outside the lungs
#    that goes with pneumothorax at the source only), and the same study without it;
# 4. the paper's Tables 1, 2/5 and 3 beside ours, and the λ trade-off;
# 5. the test that target AUROC cannot give: add the drain to an image and see whether the
#    model's score moves. It shows what the penalties really did.
#
# Time: `ci` about 4 minutes on a laptop CPU (6 training epochs per model); `cpu` about
# 6 minutes (the configs' 10 epochs); `gpu` the same configs in a minute or two. Every
# finished model is stored and reused on the next run. Every number here is **SYNTHETIC**.

# %%
# Colab / a fresh environment: install cxrlab only when it is missing (Colab already has torch)
import importlib.util, subprocess, sys
if importlib.util.find_spec("cxrlab") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                           "cxrlab @ git+https://github.com/cxrlab/cxrlab.git"])

# %%
# %matplotlib inline
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import yaml
from IPython.display import Markdown, display

from cxrlab import study as S
from cxrlab.claims import claim, claims_table
from cxrlab.course import setup
from cxrlab.data.synthetic import generate
from cxrlab.labels import NIH14
from cxrlab.methods.actdiff import shuffle_outside
from cxrlab.methods.mask_guided import compute_allowed
from cxrlab.methods.rrr import rrr_penalty
from cxrlab.study import plots as P
from cxrlab.study.scoring import load_unit_model, marker_effect
from cxrlab.study.tables import paired_difference, published_seed002_table, seed002_table

prof = setup()
# the 22 % samples ask for "every positive"; the resolver says how many it found, once per set
warnings.filterwarnings("ignore", message="protocol 'synthetic_pneumothorax_seed002'")

# %% [markdown]
# ## 1. Four masks of the same images
# The synthetic hospitals draw an exact lung mask and a lesion mask for every image, so every
# source image gets every mask (seed 002's authors drew theirs by hand, for positives only):
#
# * **abnormality**: the pneumothorax itself (only positive images have one);
# * **scaled abnormality**: the same, coarsened to a 16 × 16 grid ("scaling the ground-truth
#   segmentations to a smaller resolution so that they cover a larger area");
# * **lung periphery**: the outer band of each lung (`cxrlab.masks.lung_periphery`, a quarter of
#   the lung's width): apex, lateral margin and base, where pneumothoraces lie;
# * **lung**: the whole lung.
#
# An image whose mask is empty has *no mask* and gets no penalty: with abnormality masks that is
# every negative image. (On real data: SIIM-ACR images are ChestX-ray14 images, so their lung
# masks come from CheXmask's NIH masks through the duplicate matching,
# `cxrlab.data.chexmask.lung_masks_from_duplicates`.)

# %%
k = NIH14.index("Pneumothorax")
demo = generate("source", 64, 64, seed=1, shortcut=True, prevalence_factor={"Pneumothorax": 4})
pos = np.flatnonzero(demo.labels[:, k] > 0)
neg = np.flatnonzero(demo.labels[:, k] == 0)
drain = demo.meta["shortcut_marker"].to_numpy() == 1
pick = [int(pos[drain[pos]][0]), int(pos[drain[pos]][1]), int(neg[~drain[neg]][0])]
lung, lesion = demo.lung_masks[pick][:, None], demo.lesion_masks[pick][:, None]
masks = {kind: compute_allowed(kind, lung, lesion) for kind in
         ("abnormality", "scaled_abnormality", "lung_periphery", "lung")}
fig = P.plot_masks(demo.images[pick], masks,
                   titles=["pneumothorax + drain", "pneumothorax + drain", "negative"])
plt.show()

# %%
# mask areas over all 64 demo images, as a share of the image
all_masks = {kind: compute_allowed(kind, demo.lung_masks[:, None], demo.lesion_masks[:, None])
             for kind in masks}
area = {kind: 100 * m.reshape(len(m), -1).mean(1) for kind, m in all_masks.items()}
has_lesion = all_masks["abnormality"].reshape(64, -1).any(1)
areas = pd.DataFrame({kind: [a[has_lesion].mean(), a[~has_lesion].mean()] for kind, a in area.items()},
                     index=["images with a lesion", "images without"]).round(1)
display(areas)
per_share = all_masks["lung_periphery"].sum() / all_masks["lung"].sum()
claim("abnormality masks are empty on images without a lesion; scaling makes them larger; "
      "the periphery is about two thirds of the lung",
      areas.loc["images without", "abnormality"] == 0
      and areas.loc["images with a lesion", "scaled_abnormality"] > areas.loc["images with a lesion", "abnormality"]
      and 0.55 < per_share < 0.8,
      abnormality_pct=areas.loc["images with a lesion", "abnormality"],
      scaled_pct=areas.loc["images with a lesion", "scaled_abnormality"],
      periphery_share_of_lung=per_share)

# %% [markdown]
# The lesion masks are small and exist for positives only; the periphery covers about two thirds of
# each lung (the share printed above) and exists for every image. The drain in the first two
# images lies just *outside* the lung: it is outside every mask.
#
# ## 2. The two penalties
# **RRR**: for an image $x$ with allowed region $A$ (1 = may look),
# $\lambda \sum_{\text{pixels}} \big((1-A)\odot \partial_x \sum_k \log p_k\big)^2$, summed (not
# averaged) over pixels and images as in the reference; $p_k$ = sigmoid of the logits (one label
# here). The gradient is itself differentiated (double back-propagation), so the penalty trains.
# `cxrlab.methods.rrr.rrr_penalty(model, x, allowed)`; the unit tests check it against a plain
# autograd loop and a finite difference.
#
# **ActDiff**: the loss adds $\lambda\,\lVert f(x) - f(x')\rVert_2$ where $x'$ is $x$ with the
# pixels outside $A$ shuffled within the image (`shuffle_outside`) and $f$ the pooled
# penultimate features. *Where the reference differs*: its code applies
# `torch.nn.PairwiseDistance` to each layer's activations, which takes the L2 norm along the
# **last axis only**; for pooled features that is our per-image L2, but for a feature map
# `[B, C, H, W]` it is one norm per row of the map, averaged. We use the per-image L2 of the
# flattened difference (identical for the default pooled features); `distance="reference"`
# reproduces the row-wise version.

# %%
x = torch.from_numpy(demo.images[pick]).float()[:, None] / 255
allowed = torch.from_numpy(masks["lung_periphery"])[:, None]
shuffled = shuffle_outside(x, allowed, generator=torch.Generator().manual_seed(0))
fig, axes = plt.subplots(1, 2, figsize=(4.4, 2.4))
for ax, img, t in zip(axes, (x[0, 0], shuffled[0, 0]), ("x", "x' (shuffled outside the periphery)")):
    ax.imshow(img.numpy(), cmap="gray")
    ax.set_title(t, fontsize=8)
    ax.axis("off")
fig.suptitle("SYNTHETIC: what ActDiff compares", fontsize=9)
plt.show()
inside = allowed.bool().expand_as(x)
torch.manual_seed(0)  # the toy network's weights
toy = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                          torch.nn.Linear(4 * 64 * 64, 1))
pen_periphery = rrr_penalty(toy, x, allowed).item()
pen_whole = rrr_penalty(toy, x, torch.ones_like(allowed)).item()
claim("shuffling leaves the periphery untouched; RRR has nothing to penalise when the whole "
      "image is allowed", bool(torch.equal(shuffled[inside], x[inside])) and pen_periphery > 0
      and pen_whole == 0, rrr_penalty_periphery=pen_periphery, rrr_penalty_whole_image=pen_whole)

# %% [markdown]
# ## 3. The study: a shortcut outside the lungs
# At the synthetic **source** hospital a chest drain runs down the chest wall, outside the lung,
# in 90 % of the pneumothorax images and 5 % of the others; at the three **targets** it appears
# in 5 % of all images. A model that learns "drain ⇒ pneumothorax" scores well at the source and
# worse elsewhere. The drain is outside the lung periphery, so a periphery mask forbids it; the
# pneumothorax itself is inside.
#
# `configs/masking_seed002.yaml` (shortcut on) runs ERM, ActDiff and RRR with the three mask
# kinds: pneumothorax at 22 % as in CXR-P, a random-init `tiny_cnn` at 64 px, the epoch chosen
# on source validation AUROC, 3 seeds. We add RRR at two more λ for the trade-off curve (§5).
# `configs/masking_seed002_no_shortcut.yaml` is the same hospitals without drains, for ERM and the
# two periphery arms. Under `ci` every model trains for 6 epochs instead of the configs' 10.

# %%
CONFIGS = Path(S.__file__).resolve().parents[2] / "configs"
if not CONFIGS.exists():  # installed from a wheel: the configs are in the repository only
    CONFIGS = Path("configs")
EPOCHS = {"ci": 6}.get(prof.name)  # None: the config's own budget
results = Path(prof.results_dir)
LAMBDAS = {"erm": 0.0, "rrr_periphery_lam0.01": 0.01, "rrr_periphery": 0.1, "rrr_periphery_lam1": 1.0}


def masking_study(config: str, extra_arms=(), keep_arms=None, seeds=None, tag=""):
    """Run a masking config (its stored units are reused), under `ci` with fewer epochs."""
    cfg = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())
    if keep_arms is not None:
        cfg["methods"] = [m for m in cfg["methods"] if m["name"] in keep_arms]
    cfg["methods"] += list(extra_arms)
    if seeds is not None:
        cfg["seeds"] = list(seeds)
    if EPOCHS:
        cfg["finetune_epochs"] = EPOCHS
        cfg["name"] = f"{cfg['name']}_{prof.name}"
    cfg["name"] += tag
    return S.run_study(S.load_study_config(cfg), out=results / cfg["name"], profile=prof,
                       verbose=False)


lam_cfg = yaml.safe_load((CONFIGS / "masking_lambda.yaml").read_text())
lam_arms = [m for m in lam_cfg["methods"] if m["name"] in ("rrr_periphery_lam0.01", "rrr_periphery_lam1")]
on = masking_study("masking_seed002", extra_arms=lam_arms)
off = masking_study("masking_seed002_no_shortcut")
display(on.data)

# %% [markdown]
# 266 pneumothorax images to train on, 67 in the source test set and about 200 at each target:
# the bootstrap intervals of one model are several AUROC points wide, and the seeds differ by as
# much. That is why every comparison below is over seeds, and why the one the lesson rests on
# (RRR with the periphery against ERM) gets two more seeds.

# %% [markdown]
# ### Tables 1 and 2/5 in the paper's layout (AUROC %, mean ± 95 % interval over seeds)
# Ours first (SYNTHETIC, three targets), then the paper's (real data, cited, not ours).

# %%
ARMS = ["erm", "actdiff_abnormality", "actdiff_scaled", "actdiff_periphery", "rrr_abnormality",
        "rrr_periphery"]
ours = seed002_table(on.results, label_space="pneumothorax", arms=ARMS)
domains = ours.attrs["domains"]
targets = [d for d in domains if d != "source"]
display(Markdown(f"**{ours.attrs['caption']}**, shortcut ON"))
display(ours[["setting", "n_seeds"] + domains])
ours_off = seed002_table(off.results, label_space="pneumothorax")
display(Markdown(f"**{ours_off.attrs['caption']}**, shortcut OFF"))
display(ours_off[["setting", "n_seeds"] + domains])
pub = published_seed002_table("masks")
display(Markdown(f"**{pub.attrs['caption']}**; cited from {pub.attrs['citation']}; real data, "
                 "not ours"))
display(pub[["method", "mask", *S.tables.SEED002_COLUMNS]])

# %%
m_on, m_off = ours.set_index("arm"), ours_off.set_index("arm")
tmean = lambda m, arm: float(np.mean([m.loc[arm, f"{d} mean"] for d in targets]))
erm_src_on, erm_src_off = m_on.loc["erm", "source mean"], m_off.loc["erm", "source mean"]
erm_tg_on, erm_tg_off = tmean(m_on, "erm"), tmean(m_off, "erm")
print(f"ERM, shortcut ON: {erm_src_on:.1f} at the source, {erm_tg_on:.1f} on the targets (mean); "
      f"shortcut OFF: {erm_src_off:.1f} and {erm_tg_off:.1f}")

# %% [markdown]
# ## 4. The periphery arms against ERM, paired by seed
# The same seed gives the same initial weights and batch order to every arm, so the fair test
# is the per-seed difference: its mean and 95 % t-interval over the seeds (`beats` = the whole
# interval above 0; the last row compares each seed's mean over the three targets).
# `separated` is stricter: the two arms' own intervals do not overlap.
#
# Three seeds give a t-interval 4.3 standard errors wide on each side, so ERM and RRR with the
# periphery get seeds 3 and 4 too (same data and settings; the other arms keep 3 seeds).

# %%
more_on = masking_study("masking_seed002", keep_arms=["erm", "rrr_periphery"], seeds=[3, 4],
                        tag="_more_seeds")
more_off = masking_study("masking_seed002_no_shortcut", keep_arms=["erm", "rrr_periphery"],
                         seeds=[3, 4], tag="_more_seeds")
five = {"on": pd.concat([on.results, more_on.results]), "off": pd.concat([off.results, more_off.results])}
three = {"on": on.results, "off": off.results}


def gains(results, arm):
    return paired_difference(results, arm, "erm", label_space="pneumothorax").round(2).set_index("domain")


g = {("rrr_periphery", sc): gains(five[sc], "rrr_periphery") for sc in ("on", "off")}
g.update({("actdiff_periphery", sc): gains(three[sc], "actdiff_periphery") for sc in ("on", "off")})
for (arm, sc), d in g.items():
    display(Markdown(f"**{arm} − ERM (AUROC points, {int(d['n_seeds'].max())} seeds), shortcut {sc.upper()}**"))
    display(d)

# %%
TM = "mean of targets"
rrr_on, rrr_off = g[("rrr_periphery", "on")], g[("rrr_periphery", "off")]
act_on = g[("actdiff_periphery", "on")]
fmt = lambda d, row: f"{d.loc[row, 'diff']:+.1f} [{d.loc[row, 'diff_lo']:+.1f}, {d.loc[row, 'diff_hi']:+.1f}]"
claim("with the shortcut, RRR with lung-periphery masks beats ERM on the mean of the targets, "
      "beyond the paired interval over 5 seeds, at a source score within a point of ERM's",
      rrr_on.loc[TM, "beats"] and rrr_on.loc[TM, "n_seeds"] >= 5 and abs(rrr_on.loc["source", "diff"]) < 1,
      gain=fmt(rrr_on, TM), source=fmt(rrr_on, "source"))
claim("without the shortcut the gain is about as large: it shrinks by less than its own "
      "interval's half-width and still beats ERM", rrr_off.loc[TM, "beats"]
      and abs(rrr_on.loc[TM, "diff"] - rrr_off.loc[TM, "diff"])
      < 0.5 * (rrr_off.loc[TM, "diff_hi"] - rrr_off.loc[TM, "diff_lo"]),
      gain_on=fmt(rrr_on, TM), gain_off=fmt(rrr_off, TM))
best_t = rrr_on.loc[targets, "diff"].astype(float).idxmax()
claim("the largest gain is at target_lowres, with and without the shortcut",
      best_t == "target_lowres" and rrr_off.loc[targets, "diff"].astype(float).idxmax() == "target_lowres",
      on=fmt(rrr_on, "target_lowres"), off=fmt(rrr_off, "target_lowres"))
claim("ActDiff with the periphery (lambda 0.3) loses source AUROC beyond its interval and does "
      "not beat ERM on the mean of the targets", act_on.loc["source", "diff_hi"] < 0
      and not act_on.loc[TM, "beats"], source=fmt(act_on, "source"), targets=fmt(act_on, TM))

# %% [markdown]
# ### The lesion masks, reported the same way

# %%
lesion = {arm: gains(on.results, arm)
          for arm in ("rrr_abnormality", "actdiff_abnormality", "actdiff_scaled")}
lesion_table = pd.DataFrame({arm: {row: fmt(d, row) for row in d.index} for arm, d in lesion.items()})
display(Markdown("**lesion-mask arms − ERM (AUROC points, 3 seeds, shortcut ON)**; the paper: "
                 "ActDiff 3.6 to 9.1 and RRR 0.3 to 2.4 points below ERM on the four targets"))
display(lesion_table)

# %%
ra, aa, asc = lesion["rrr_abnormality"], lesion["actdiff_abnormality"], lesion["actdiff_scaled"]
claim("RRR with abnormality masks is level with ERM at the source and slightly better on the "
      "mean of the targets, by less than RRR with the periphery (the paper: slightly worse)",
      abs(ra.loc["source", "diff"]) < 1 and 0 < ra.loc[TM, "diff"] < rrr_on.loc[TM, "diff"],
      source=fmt(ra, "source"), targets=fmt(ra, TM))
claim("ActDiff with abnormality and scaled masks loses source AUROC on average (with intervals "
      "that reach 0: the seeds disagree) and does not beat ERM on the mean of the targets (the "
      "paper: worse on every target)",
      aa.loc["source", "diff"] < -3 and asc.loc["source", "diff"] < -3
      and not aa.loc[TM, "beats"] and not asc.loc[TM, "beats"],
      abnormality=f"source {fmt(aa, 'source')}, targets {fmt(aa, TM)}",
      scaled=f"source {fmt(asc, 'source')}, targets {fmt(asc, TM)}")

# %% [markdown]
# ## 5. The λ trade-off (RRR, lung periphery, shortcut ON)
# λ = 0 is ERM. Larger λ pushes the input gradient outside the periphery towards zero.

# %%
fig = P.plot_lambda_curve(on.results, LAMBDAS, label_space="pneumothorax")
plt.show()
lam_table = seed002_table(on.results, label_space="pneumothorax", arms=list(LAMBDAS))
display(lam_table[["setting"] + domains])
lam_src = [float(lam_table.set_index("arm").loc[a, "source mean"]) for a in LAMBDAS]
claim("the source AUROC falls as lambda grows", bool(np.all(np.diff(lam_src) < 0)),
      source_by_lambda=", ".join(f"{l:g}: {v:.1f}" for l, v in zip(LAMBDAS.values(), lam_src)))

# %% [markdown]
# ## 6. Does the model still use the drain? Add it and see
# AUROC does not say *why* a model scores well. The synthetic hospitals draw every image from
# keyed randomness, so `generate(..., shortcut=False)` gives exactly the same images minus the
# drain. For each trained model (its epoch chosen on source validation), `marker_effect` scores
# the same source images with and without the drain: the mean change of the logit when the
# drain is added (`delta`), the spread of the logits (`logit_sd`) and their ratio (`effect`):
# how far the drain alone moves an image through the model's ranking.

# %%
src = generate("source", 3000, 64, seed=7, shortcut=True)
src_clean = generate("source", 3000, 64, seed=7, shortcut=False)
with_drain = src.meta["shortcut_marker"].to_numpy() == 1
wd, wod = src.images[with_drain][:, None], src_clean.images[with_drain][:, None]
claim("only the drain's pixels differ between the two renderings",
      bool((wd != wod).mean() < 0.05), images=int(with_drain.sum()),
      changed_pixel_share=float((wd != wod).mean()))
rows, models = [], {}  # models: the trained networks, kept for Exercise 2
for sc, res in (("on", on), ("off", off)):
    for unit in res.units["unit"]:
        models[sc, unit] = alg = load_unit_model(res.out, unit, 64)
        rows.append({"shortcut": sc, "arm": unit.split("__")[0], "unit": unit,
                     **marker_effect(alg, wd, wod)})
effects = pd.DataFrame(rows)
eff = effects.groupby(["shortcut", "arm"])[["delta", "logit_sd", "effect"]].mean().round(2)
display(eff)

# %%
e = eff.loc["on"]
claim("with the shortcut, the drain moves ERM's score by more than two logit spreads; without "
      "it, by almost nothing", e.loc["erm", "effect"] > 2 and eff.loc[("off", "erm"), "effect"] < 0.3,
      erm_on=e.loc["erm", "effect"], erm_off=eff.loc[("off", "erm"), "effect"])
claim("RRR with the periphery shrinks the logits, not the drain's pull: at every lambda the drain "
      "still moves its score by at least 3/4 of ERM's effect, in units of its own spread",
      all(e.loc[a, "effect"] > 0.75 * e.loc["erm", "effect"] for a in LAMBDAS if a != "erm")
      and e.loc["rrr_periphery_lam1", "logit_sd"] < e.loc["rrr_periphery", "logit_sd"] < e.loc["erm", "logit_sd"],
      **{f"effect_{a}": e.loc[a, "effect"] for a in LAMBDAS},
      **{f"sd_{a}": e.loc[a, "logit_sd"] for a in LAMBDAS})
claim("ActDiff with the periphery does cut the drain's effect to less than a third of ERM's",
      e.loc["actdiff_periphery", "effect"] < e.loc["erm", "effect"] / 3,
      actdiff=e.loc["actdiff_periphery", "effect"], erm=e.loc["erm", "effect"])

# %% [markdown]
# So the gain of RRR in §4 is **not** the drain: the drain still works inside the RRR models,
# as strongly (relative to each model's spread of scores) as inside ERM. The penalty is a sum of
# squared input gradients; the cheapest way to pay less is to make the whole function flatter,
# which AUROC does not see. Where does the gain come from, then? The targets differ from the
# source *outside the lungs* too (collimation, burned-in text, markers, noise; notebook 01);
# a penalty on the gradient outside the lung periphery makes the model less sensitive to all of
# it, shortcut or not. That is why the gain is largest at `target_lowres` and why it is there
# without the shortcut.
#
# ActDiff does take the drain out, but at λ = 0.3 it takes much of the pneumothorax with it:
# shuffling everything outside a thin band of lung is a hard invariance for a four-layer CNN at
# 64 px, whose receptive fields straddle the band.

# %% [markdown]
# ## 7. Table 3: more source data
# `configs/masking_full_source.yaml` triples the source (15,000 images per hospital, about 800
# pneumothorax images in training instead of 266). It costs about three times the CPU of the
# main study, so this notebook shows it once it has been run
# (`cxrlab run configs/masking_full_source.yaml --out RESULTS/masking_full_source`).

# %%
full_dir = results / "masking_full_source"
display(published_seed002_table("full")[["method", "mask", *S.tables.SEED002_COLUMNS]])
if (full_dir / "metrics.json").exists():
    full = S.run_study(CONFIGS / "masking_full_source.yaml", out=full_dir, profile=prof, verbose=False)
    tf = seed002_table(full.results, label_space="pneumothorax")
    display(Markdown(f"**{tf.attrs['caption']}**"))
    display(tf[["setting", "n_seeds"] + domains])
else:
    print(f"not run yet: {full_dir} has no results")

# %% [markdown]
# ## What we saw
# The cell below writes this section from the outputs above; every number in it was checked by
# a claim in the cell next to its computation.

# %%
display(Markdown(f"""
* **The shortcut works on ERM.** With the drain, ERM reaches {erm_src_on:.1f} AUROC at the source
  and {erm_tg_on:.1f} on the targets (mean); without it {erm_src_off:.1f} and {erm_tg_off:.1f}
  (SYNTHETIC). The drain adds {e.loc['erm', 'effect']:.1f} logit spreads to an image's score.
* **RRR with lung-periphery masks beats ERM on the targets** (5 seeds, paired):
  {fmt(rrr_on, TM)} AUROC points on the mean of the targets, {fmt(rrr_on, 'target_lowres')} at
  target_lowres, at a source score {fmt(rrr_on, 'source')} from ERM's.
* **Without the shortcut the gain is about as large**: {fmt(rrr_off, TM)}. It shrinks by
  {rrr_on.loc[TM, 'diff'] - rrr_off.loc[TM, 'diff']:.1f} points, well inside the noise.
* **The drain still works inside the RRR models**: effect {e.loc['rrr_periphery', 'effect']:.2f}
  (λ 0.1) and {e.loc['rrr_periphery_lam1', 'effect']:.2f} (λ 1) against ERM's
  {e.loc['erm', 'effect']:.2f}, while their logit spread falls from {e.loc['erm', 'logit_sd']:.2f}
  to {e.loc['rrr_periphery', 'logit_sd']:.2f} and {e.loc['rrr_periphery_lam1', 'logit_sd']:.2f}.
  RRR's gain is robustness to everything outside the lungs, not the removal of the shortcut.
* **ActDiff with the periphery removes the drain** (effect
  {e.loc['actdiff_periphery', 'effect']:.2f}) **and much of the source score** ({fmt(act_on, 'source')}),
  and gains nothing on the targets on average ({fmt(act_on, TM)}).
* **Lesion masks**: RRR with abnormality masks {fmt(ra, TM)} on the targets; ActDiff with
  abnormality masks {fmt(aa, 'source')} at the source and {fmt(aa, TM)} on the targets, scaled
  {fmt(asc, 'source')} and {fmt(asc, TM)}.
* **λ**: the source AUROC falls from {lam_src[0]:.1f} (ERM) to {lam_src[-1]:.1f} (λ = 1).
"""))

# %% [markdown]
# **Agreement with the paper** (seed 002, real data; our numbers are SYNTHETIC).
# *Agrees*: the mask matters. ActDiff with lesion masks loses to ERM at the source on average
# (about 8 points, though its seeds disagree so much that the interval reaches 0), as in the
# paper's Tables 1 and 2; the lung periphery is the better guide for RRR. *Disagrees*: our
# periphery RRR *beats* ERM on the targets (the paper: level), our RRR with abnormality masks is
# slightly *better* than ERM on average (the paper: slightly worse), and our periphery ActDiff at
# one λ is far worse. Our targets differ from the source outside the lungs in ways a periphery
# mask shuts out; the paper's may not. *New here*: adding the drain to the same image shows that
# RRR did **not** remove the shortcut it was meant to remove, although it "won" on the targets.
# Judge a masking method that way, not by target AUROC alone.
#
# Seed 002's Table 3 (more source data) is in `configs/masking_full_source.yaml`; it costs about
# three times the CPU of the main study, so the `ci` run shows the paper's table only.
#
# What we tried that did not change this picture (issue #11's notes have the numbers): four
# times the source data; `outputs="both"` (the gradient of log p + log(1 − p), which does not
# vanish on confident positives); scale-free versions of both penalties (`scale="share"` for
# RRR, `scale="batch"` for ActDiff), which remove the "shrink everything" way out and leave the
# networks unable to learn at all once λ is large enough to matter; a drain placed further from
# the lung; and the pre-trained stand-in backbones.

# %% [markdown]
# ## What transfers to real data
# * The mask is a hyper-parameter of the method (`mask: lung_periphery`); on real data the lung
#   masks come from CheXmask (`cxrlab.data.chexmask.add_lung_masks` for NIH, CheXpert, MIMIC)
#   and, for SIIM-ACR, from the NIH image each SIIM image copies (`lung_masks_from_duplicates`).
# * λ does not transfer: both penalties are sums or distances whose size depends on the image
#   size, the batch and the network. Sweep it on source validation, never on a target.
# * A better target score is not evidence that a shortcut is gone. Where you can add or remove
#   the suspected shortcut (a drain, a text marker, a collimation edge), do it and watch the
#   score (`cxrlab.study.scoring.marker_effect`); where you cannot, grey out everything outside
#   the region and compare (`region_reliance`), or look at the attention (notebook 05).
# * An input-gradient penalty measures *sensitivity*, not *use*: a high-contrast marker can move
#   the score a lot through a small gradient (Exercise 2).

# %% [markdown]
# ## Exercises
# The solution is in the hidden cell below each exercise (click to show it); CI runs it.
#
# ### Exercise 1 · How wide is the periphery?
# The lung periphery's width is a choice (`width_frac`, a quarter of each lung's width by
# default). How much of the lung does it cover at 0.1, 0.25 and 0.5, and can the drain ever fall
# inside it?

# %% tags=["solution"] jupyter={"source_hidden": true}
shares = {}
for wf in (0.1, 0.25, 0.5):
    per = compute_allowed("lung_periphery", demo.lung_masks[:, None], width_frac=wf)
    shares[wf] = per.sum() / demo.lung_masks.sum()
    print(f"width_frac {wf}: {100 * shares[wf]:.0f}% of the lung")
claim("a wider band covers more of the lung but never leaves it, so the drain (outside the lung) "
      "is never inside", shares[0.1] < shares[0.25] < shares[0.5] <= 1
      and bool((compute_allowed("lung_periphery", demo.lung_masks[:, None], width_frac=0.5)
                <= demo.lung_masks).all()), **{f"share_{k}": v for k, v in shares.items()})

# %% [markdown]
# ### Exercise 2 · Slope against jump
# RRR penalises the input gradient $g = \partial z/\partial x$ outside the mask. To first order
# the drain moves the logit by $g \cdot \Delta x$ ($\Delta x$ = the drain's pixels). Compare this
# first-order prediction with the real change (`delta` in §6) for ERM and the three RRR
# models, on the same images. What does a ratio below 1 mean?

# %% tags=["solution"] jupyter={"source_hidden": true}
def slope_over_jump(alg, with_m, without_m):
    xa = alg.prepare_images(torch.as_tensor(with_m)).detach().requires_grad_(True)
    xb = alg.prepare_images(torch.as_tensor(without_m))
    za = alg.head(alg.backbone(xa))[:, 0]
    (grad,) = torch.autograd.grad(za.sum(), xa)
    with torch.no_grad():
        jump = (za - alg.head(alg.backbone(xb))[:, 0]).mean()
        first_order = (grad * (xa - xb)).flatten(1).sum(1).mean()
    return float(first_order / jump)


ratios = {}
for arm in LAMBDAS:
    units = [u for u in on.units["unit"] if u.split("__")[0] == arm]
    ratios[arm] = float(np.mean([slope_over_jump(models["on", u], wd, wod) for u in units]))
print({a: round(r, 2) for a, r in ratios.items()})
claim("the larger lambda, the more the gradient at the drain under-states what the drain does",
      bool(np.all(np.diff(list(ratios.values())) < 0)) and ratios["rrr_periphery_lam1"] < 0.8,
      **{f"ratio_{a}": r for a, r in ratios.items()})

# %% [markdown]
# A ratio below 1: the drain moves the score more than the gradient at the image says. The
# network has learned to be *flat* around the drain (for example, a unit that saturates once the
# drain is there) while still using it. RRR sees the flat slope and is satisfied; the
# add-the-drain test in §6 sees the jump. ActDiff compares real activations, not slopes, which
# is why it can remove the drain at all.

# %%
print(f"\n{len(claims_table())} claims checked in this notebook, all hold:")
claims_table()[["claim", "numbers"]]
