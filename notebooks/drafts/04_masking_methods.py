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
# * **ActDiff** (Viviano et al.) penalises the change of the network's *activations* when
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
#    that goes with pneumothorax at the source only): does a lung-periphery mask remove it?
# 4. the paper's Tables 1, 2/5 and 3 beside ours, and an honest reading of both.
#
# Time: **ci** reads the stored studies (seconds) or computes them (about 40 CPU-minutes, once;
# `cxrlab run configs/masking_seed002.yaml --out ...` does the same from a shell); **cpu** the
# same; **gpu** the same configs on a GPU in a few minutes. Every number here is **SYNTHETIC**.

# %%
# Colab / a fresh environment: install cxrlab only when it is missing (Colab already has torch)
import importlib.util, subprocess, sys
if importlib.util.find_spec("cxrlab") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                           "cxrlab @ git+https://github.com/cxrlab/cxrlab.git"])

# %%
# %matplotlib inline
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from cxrlab import study as S
from cxrlab.course import setup
from cxrlab.data.synthetic import generate
from cxrlab.labels import NIH14
from cxrlab.methods.actdiff import shuffle_outside
from cxrlab.methods.mask_guided import compute_allowed
from cxrlab.methods.rrr import rrr_penalty
from cxrlab.study import plots as P
from cxrlab.study.tables import paired_difference, published_seed002_table, seed002_table

prof = setup()
# the 22 % samples ask for "every positive"; the resolver says how many it found, once per set
import warnings
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
# every negative image.

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
assert areas.loc["images without", "abnormality"] == 0, areas
assert areas.loc["images with a lesion", "scaled_abnormality"] > areas.loc["images with a lesion", "abnormality"], areas
assert 0.55 < per_share < 0.8, per_share  # "about two thirds" below
print(f"the periphery is {100 * per_share:.0f}% of the lung area")

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
# **last axis only** — for pooled features that is our per-image L2, but for a feature map
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
assert torch.equal(shuffled[inside], x[inside])  # the periphery is untouched
toy = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                          torch.nn.Linear(4 * 64 * 64, 1))
print("RRR penalty of a random conv net, periphery mask:", f"{rrr_penalty(toy, x, allowed).item():.3g}",
      "| whole image allowed:", rrr_penalty(toy, x, torch.ones_like(allowed)).item())

# %% [markdown]
# ## 3. The study: a shortcut outside the lungs
# At the synthetic **source** hospital a chest drain runs down the chest wall, outside the lung,
# in 90 % of the pneumothorax images and 5 % of the others; at the three **targets** it appears
# in 5 % of all images. A model that learns "drain ⇒ pneumothorax" scores well at the source and
# badly elsewhere. The drain is outside the lung periphery, so a periphery mask forbids it; the
# pneumothorax itself is inside.
#
# `configs/masking_seed002.yaml` (shortcut on) runs ERM, ActDiff and RRR with the three mask
# kinds: pneumothorax at 22 % as in CXR-P, a random-init `tiny_cnn` at 64 px, 10 epochs, the
# epoch chosen on source validation AUROC, 3 seeds. `configs/masking_seed002_no_shortcut.yaml`
# is the same without drains. Each finished unit is stored and skipped on the next run.

# %%
CONFIGS = Path(S.__file__).resolve().parents[2] / "configs"
if not CONFIGS.exists():  # installed from a wheel: the configs are in the repository only
    CONFIGS = Path("configs")
results = Path(prof.results_dir)
on = S.run_study(CONFIGS / "masking_seed002.yaml", out=results / "masking_seed002", profile=prof,
                 verbose=False)
off = S.run_study(CONFIGS / "masking_seed002_no_shortcut.yaml",
                  out=results / "masking_seed002_no_shortcut", profile=prof, verbose=False)
display(on.data)

# %% [markdown]
# ### Tables 1 and 2/5 in the paper's layout (AUROC %, mean ± 95 % interval over seeds)

# %%
ours = seed002_table(on.results, label_space="pneumothorax")
display(Markdown(f"**{ours.attrs['caption']}**, shortcut ON"))
display(ours[["setting"] + ours.attrs["domains"]])
pub = published_seed002_table("masks")
display(Markdown(f"**{pub.attrs['caption']}** — cited from {pub.attrs['citation']}; real data, "
                 "not ours"))
display(pub[["method", "mask", *S.tables.SEED002_COLUMNS]])

# %%
targets = [d for d in ours.attrs["domains"] if d != "source"]
m = ours.set_index("arm")
erm_gap = m.loc["erm", "source mean"] - np.mean([m.loc["erm", f"{d} mean"] for d in targets])
assert m.loc["erm", "source mean"] > 95 and erm_gap > 25, (m.loc["erm", "source mean"], erm_gap)
m_off = seed002_table(off.results, label_space="pneumothorax").set_index("arm")
off_targets = np.mean([m_off.loc["erm", f"{d} mean"] for d in targets])
on_targets = np.mean([m.loc["erm", f"{d} mean"] for d in targets])
assert m.loc["erm", "source mean"] > m_off.loc["erm", "source mean"] and on_targets < off_targets
print(f"ERM, shortcut ON: {m.loc['erm', 'source mean']:.1f} at the source, {on_targets:.1f} on the "
      f"targets (mean); shortcut OFF: {m_off.loc['erm', 'source mean']:.1f} and {off_targets:.1f}. "
      "The drain raises the source score and costs the targets")

# %% [markdown]
# ### RRR with the lung periphery against ERM, paired by seed
# The same seed gives the same initial weights and batch order to every arm, so the fair test
# is the per-seed difference: its mean and 95 % t-interval over seeds (`beats` = the whole
# interval above 0; the last row compares each seed's mean over the three targets). `separated`
# is stricter: the two arms' own intervals do not overlap. Three seeds give a t-interval
# 4.3 standard errors wide on each side, so the claim runs on 5 seeds
# (`configs/masking_claim*.yaml`: the same data and settings as the studies above, so their
# units for seeds 0-2 are the same units).

# %%
def gains(res, arm):
    d = paired_difference(res.results, arm, "erm", label_space="pneumothorax")
    return d.round(2)

claim_on = S.run_study(CONFIGS / "masking_claim.yaml", out=results / "masking_claim",
                       profile=prof, verbose=False)
claim_off = S.run_study(CONFIGS / "masking_claim_no_shortcut.yaml",
                        out=results / "masking_claim_no_shortcut", profile=prof, verbose=False)
display(seed002_table(claim_on.results, label_space="pneumothorax")[["setting", "n_seeds"] + ours.attrs["domains"]])
g_on = gains(claim_on, "rrr_periphery")
g_off = gains(claim_off, "rrr_periphery")
display(Markdown("**RRR, lung periphery − ERM (AUROC points), shortcut ON**"))
display(g_on)
display(Markdown("**the same, shortcut OFF**"))
display(g_off)
for arm in ("actdiff_periphery", "rrr_abnormality", "actdiff_abnormality", "actdiff_scaled"):
    display(Markdown(f"**{arm} − ERM, shortcut ON (3 seeds)**"))
    display(gains(on, arm))
display(Markdown("**actdiff_periphery − ERM, shortcut OFF (3 seeds)**"))
display(gains(off, "actdiff_periphery"))

# %%
tg_on = g_on[g_on["role"] == "out-of-domain"]
tg_off = g_off[g_off["role"] == "out-of-domain"]
mean_on = float(g_on.set_index("domain").loc["mean of targets", "diff"])
mean_off = float(g_off.set_index("domain").loc["mean of targets", "diff"])
print(f"RRR-periphery minus ERM, mean over the targets: {mean_on:+.1f} points with the shortcut, "
      f"{mean_off:+.1f} without; beats ERM beyond the interval on {int(tg_on['beats'].sum())} of "
      f"{len(tg_on)} targets with the shortcut, {int(tg_off['beats'].sum())} without")

# %% [markdown]
# ### The λ trade-off (RRR, lung periphery, shortcut ON)
# `configs/masking_lambda.yaml` runs RRR at λ = 0.01, 0.1 and 1 on the same data (its ERM and
# λ = 0.1 units are those of the main study).

# %%
lam = S.run_study(CONFIGS / "masking_lambda.yaml", out=results / "masking_lambda", profile=prof,
                  verbose=False)
fig = P.plot_lambda_curve(lam.results, {"erm": 0.0, "rrr_periphery_lam0.01": 0.01,
                                        "rrr_periphery": 0.1, "rrr_periphery_lam1": 1.0},
                          label_space="pneumothorax")
plt.show()
display(seed002_table(lam.results, label_space="pneumothorax")[["setting"] + ours.attrs["domains"]])

# %% [markdown]
# ### Does the model still use the drain?
# AUROC does not say *why* a model scores well. The synthetic hospitals record which images
# carry the drain, so we can ask each trained model directly: among the **negative** images
# (no pneumothorax, so the finding cannot explain the score), how well does its score tell the
# images with a drain from those without? 0.5 = the drain does not move the score; near 1 = the
# drain alone raises it (`cxrlab.study.tables.shortcut_reliance`, from the stored predictions).

# %%
from cxrlab.study.tables import shortcut_reliance

manifest = S.load_study_data(S.load_study_config(CONFIGS / "masking_seed002.yaml"), prof,
                             verbose=False).sets["train"].cache.manifest
rel = pd.concat([shortcut_reliance(results / "masking_seed002", manifest),
                 shortcut_reliance(results / "masking_lambda", manifest)]).drop_duplicates()
reliance = rel.groupby(["method", "set"])["marker_auc"].mean().unstack()[
    ["val", "source", *targets]].round(3)
display(reliance)

# %% [markdown]
# ### Why: the drain, added and removed
# A sharper test than any AUROC: score the **same** source test images with and without the
# drain. The synthetic hospitals draw every image from keyed randomness, so
# `generate(..., shortcut=False)` gives exactly the same images minus the drain. For each trained
# model (its epoch chosen on source validation), `marker_effect` reports the mean change of the
# logit when the drain is added (`delta`), the spread of its logits (`logit_sd`) and their ratio
# (`effect`): how far the drain alone moves an image through the model's ranking.

# %%
from cxrlab.study.scoring import load_unit_model, marker_effect

src_set = S.load_study_data(S.load_study_config(CONFIGS / "masking_seed002.yaml"), prof,
                            verbose=False).sets["source"]
first = int(np.flatnonzero(manifest["domain"].to_numpy() == "source")[0])
rows = src_set.rows[manifest["shortcut_marker"].to_numpy()[src_set.rows] == 1]
no_drain = generate("source", int((manifest["domain"] == "source").sum()), src_set.cache.image_size,
                    seed=0, shortcut=False)
with_d = torch.from_numpy(np.asarray(src_set.cache.images[rows]))[:, None]
without_d = torch.from_numpy(no_drain.images[rows - first])[:, None]
assert (with_d != without_d).float().mean() < 0.05  # only the drain's pixels differ
effects = []
for res in (on, lam):
    for unit in res.units["unit"]:
        alg = load_unit_model(res.out, unit, src_set.cache.image_size)
        effects.append({"arm": unit.split("__")[0], "unit": unit, **marker_effect(alg, with_d, without_d)})
effects = pd.DataFrame(effects).drop_duplicates("unit")
effects = effects.groupby("arm")[["delta", "logit_sd", "effect"]].mean().round(2)
display(effects)

# %% [markdown]
# ### Table 3: more source data
# `configs/masking_full_source.yaml` triples the source (15,000 images per hospital, about 800
# pneumothorax images in training instead of 266). It takes about three times as long as the
# main study, so this notebook shows it only once it has been run
# (`cxrlab run configs/masking_full_source.yaml --out RESULTS/masking_full_source --seeds 0`
# for one seed; without `--seeds`, the config's three).

# %%
full_dir = results / "masking_full_source"
display(published_seed002_table("full")[["method", "mask", *S.tables.SEED002_COLUMNS]])
if (full_dir / "metrics.json").exists():
    import json as _json

    done = sorted({u["seed"] for u in _json.loads((full_dir / "metrics.json").read_text())["units"]})
    full = S.run_study(CONFIGS / "masking_full_source.yaml", out=full_dir, profile=prof,
                       seeds=done, verbose=False)
    tf = seed002_table(full.results, label_space="pneumothorax")
    display(Markdown(f"**{tf.attrs['caption']}**, {full.data.loc[full.data['set'] == 'train', 'images'].item()} "
                     "source training images"))
    display(tf[["setting"] + ours.attrs["domains"]])
else:
    print(f"not run yet: {full_dir} has no results")

# %% [markdown]
# ## What we saw
# The cell below writes this section from the outputs above and checks each statement it makes
# (an `assert` per claim), so it fails when a re-run stops supporting it.

# %%
gon, goff = g_on.set_index("domain"), g_off.set_index("domain")
eff = effects
lesion = {a: gains(on, a).set_index("domain") for a in ("rrr_abnormality", "actdiff_abnormality",
                                                         "actdiff_scaled") if a in set(on.results["method"])}
n_on, n_off = int(gon["n_seeds"].max()), int(goff["n_seeds"].max())
# 1. the shortcut works on ERM
assert m.loc["erm", "source mean"] > 95 and erm_gap > 25
# 2. RRR with the lung periphery beats ERM on the targets, beyond the paired interval
assert gon.loc["mean of targets", "beats"], gon
# 3. without the shortcut the gain shrinks only a little and stays beyond its interval
assert 0.5 * mean_on < mean_off < mean_on and goff.loc["mean of targets", "beats"], (mean_on, mean_off)
# ... on the same two targets, the largest on target_lowres
beaten_on = [d for d in targets if gon.loc[d, "beats"]]
assert len(beaten_on) == 2 and gon.loc[targets, "diff"].idxmax() == "target_lowres", gon
assert [d for d in targets if goff.loc[d, "beats"]] == beaten_on, goff
# 4. ... but the drain still works inside the RRR model (at every lambda): it only shrank the logits
for arm in ("rrr_periphery", "rrr_periphery_lam1"):
    assert eff.loc[arm, "delta"] < 0.7 * eff.loc["erm", "delta"], eff
    assert eff.loc[arm, "effect"] > 0.8 * eff.loc["erm", "effect"], eff
assert eff.loc["rrr_periphery_lam1", "logit_sd"] < eff.loc["rrr_periphery", "logit_sd"], eff
# 5. ActDiff with the periphery removes most of the drain's effect, and much of the source score
assert eff.loc["actdiff_periphery", "effect"] < 0.5 * eff.loc["erm", "effect"], eff
g_act = gains(on, "actdiff_periphery").set_index("domain")
assert g_act.loc["source", "diff_hi"] < -5 and not g_act.loc["mean of targets", "beats"], g_act
# 6. lesion masks: ActDiff loses source AUROC and target_lowres; RRR-abnormality a small gain
for a in ("actdiff_abnormality", "actdiff_scaled"):
    assert lesion[a].loc["source", "diff_hi"] < 0 and lesion[a].loc["target_lowres", "diff_hi"] < 0, lesion[a]
    assert not lesion[a].loc["mean of targets", "beats"], lesion[a]
g_ra = lesion["rrr_abnormality"]
assert abs(g_ra.loc["source", "diff"]) < 1 and 0 < g_ra.loc["mean of targets", "diff"] < mean_on, g_ra
per_target = ", ".join(f"{d} {gon.loc[d, 'diff']:+.1f} [{gon.loc[d, 'diff_lo']:+.1f}, "
                       f"{gon.loc[d, 'diff_hi']:+.1f}]" for d in targets)
per_target_off = ", ".join(f"{d} {goff.loc[d, 'diff']:+.1f}" for d in targets)
lesion_txt = "; ".join(
    f"{a}: source {g.loc['source', 'diff']:+.1f}, "
    + ", ".join(f"{d} {g.loc[d, 'diff']:+.1f}" for d in targets)
    + f", mean of targets {g.loc['mean of targets', 'diff']:+.1f} [{g.loc['mean of targets', 'diff_lo']:+.1f}, "
      f"{g.loc['mean of targets', 'diff_hi']:+.1f}]"
    for a, g in lesion.items())
display(Markdown(f"""
* **The shortcut works.** With the drain, ERM reaches {m.loc['erm', 'source mean']:.1f} AUROC
  at the source and {on_targets:.1f} on the targets (mean); without it
  {m_off.loc['erm', 'source mean']:.1f} and {off_targets:.1f} (SYNTHETIC). The targets are much
  harder than the source either way: the hospitals differ in acquisition too.
* **RRR with lung-periphery masks beats ERM on the targets** ({n_on} seeds, paired differences
  in AUROC points with 95 % intervals): {per_target}; mean over the targets
  {gon.loc['mean of targets', 'diff']:+.1f} [{gon.loc['mean of targets', 'diff_lo']:+.1f},
  {gon.loc['mean of targets', 'diff_hi']:+.1f}], at an unchanged source score
  ({gon.loc['source', 'diff']:+.1f}).
* **Without the shortcut the gain barely shrinks**: {per_target_off} ({n_off} seeds); mean over
  the targets {mean_off:+.1f} [{goff.loc['mean of targets', 'diff_lo']:+.1f},
  {goff.loc['mean of targets', 'diff_hi']:+.1f}] instead of {mean_on:+.1f}, beyond its interval
  on the same targets ({', '.join(beaten_on)}). So most of the gain is *not* about the drain.
* **The drain still works inside the RRR model.** Adding the drain moves the ERM logit by
  {eff.loc['erm', 'delta']:.2f} and the RRR logit by only {eff.loc['rrr_periphery', 'delta']:.2f},
  but RRR's logits are {eff.loc['erm', 'logit_sd'] / eff.loc['rrr_periphery', 'logit_sd']:.1f}×
  narrower too: in units of each model's spread the drain moves an image by
  {eff.loc['erm', 'effect']:.2f} (ERM) and {eff.loc['rrr_periphery', 'effect']:.2f} (RRR); at
  λ = 1, {eff.loc['rrr_periphery_lam1', 'effect']:.2f} with a spread of only
  {eff.loc['rrr_periphery_lam1', 'logit_sd']:.2f}. The penalty is a sum of squared input
  gradients, so the cheapest way to pay less is to scale the whole function down — which
  AUROC does not see — not to stop looking at the drain.
* **ActDiff with the periphery does remove the drain** (effect
  {eff.loc['actdiff_periphery', 'effect']:.2f}), but at λ = 0.3 it also loses
  {-g_act.loc['source', 'diff']:.1f} points at the source and gains nothing on the targets on
  average ({g_act.loc['mean of targets', 'diff']:+.1f}): it over-regularises; a finer λ sweep
  for ActDiff is the obvious next experiment.
* **Where RRR's gain comes from, then**: the targets differ from the source *outside the
  lungs* too (collimation, burned-in text such as "AP PORT" and "1024", markers); a penalty on
  everything outside the lung periphery makes the model less sensitive to all of it, shortcut
  or not. The gain is largest on target_lowres.
* **Lesion masks** (3 seeds, difference to ERM in AUROC points): {lesion_txt}. ActDiff with
  lesion masks costs source AUROC and target_lowres (beyond the interval) and is level on
  average; RRR with abnormality masks is level at the source and a little better on the
  targets, less than with the periphery.
"""))

# %% [markdown]
# **Agreement with the paper** (seed 002, real data; our numbers are SYNTHETIC).
# *Agrees*: the mask matters. ActDiff with abnormality or scaled masks loses to ERM at the
# source and on at least one target, as in the paper's Table 1/2; the lung periphery is the
# better guide for RRR. *Disagrees*: our periphery RRR *beats* ERM on two of three targets
# (the paper: level), and our RRR with abnormality masks is slightly *better* than ERM on
# average (the paper: slightly worse); our periphery ActDiff at a single untuned λ is far worse.
# Our targets differ from the source outside the lungs in ways a periphery mask shuts out; the
# paper's may not. *New here*: the add-and-remove test shows that RRR did **not** remove the
# shortcut it was meant to remove, and ActDiff did, at a price. Check a masking method that
# way, not by target AUROC alone.
#
# Seed 002's Table 3 (three times the source data, `configs/masking_full_source.yaml`) costs
# about three times the CPU of the main study; the stored run has one seed (`--seeds 0`), so
# its numbers carry bootstrap intervals over patients, not over seeds, and support no claim.

# %% [markdown]
# ## What transfers to real data
# * The masks are a hyper-parameter of the method (`mask: lung_periphery`); on real data the
#   lung masks come from CheXmask (`cxrlab.data.chexmask.add_lung_masks` for NIH, CheXpert,
#   MIMIC) and, for SIIM-ACR, from the NIH image each SIIM image copies
#   (`lung_masks_from_duplicates`).
# * λ does not transfer: both penalties are sums or distances whose size depends on the image
#   size, the batch and the network. Sweep it on source validation, never on a target.
# * A mask only helps against what lies outside it. Our shortcut sits outside the lungs by
#   construction; on real data, check where a model looks (notebook 05) before trusting a mask.

# %% [markdown]
# ## Exercises
# 1. The lung periphery's width is a choice (`width_frac`, a quarter of each lung's width by
#    default). How much of the lung does it cover at 0.1, 0.25 and 0.5, and does the drain of
#    the first image ever fall inside it?
#
# ### Solution

# %%
drain_px = {}
for wf in (0.1, 0.25, 0.5):
    per = compute_allowed("lung_periphery", demo.lung_masks[:, None], width_frac=wf)
    share = per.sum() / demo.lung_masks.sum()
    print(f"width_frac {wf}: {100 * share:.0f}% of the lung")
assert (compute_allowed("lung_periphery", demo.lung_masks[:, None], width_frac=0.5)
        <= demo.lung_masks).all()  # never more than the lung: the drain, outside it, never counts
