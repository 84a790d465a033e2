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
# # 00 · Setting up: environment, device, profiles, folders
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/cxrlab/cxrlab/blob/main/notebooks/00_setup.ipynb)
#
#
# This course asks one question again and again: **does a chest X-ray model trained at one hospital
# still work at another?** Before we measure anything, this notebook checks your environment and
# explains the three *profiles* that let the same notebooks run on a laptop CPU in minutes or on a
# GPU with real data.
#
# What you will learn here:
# 1. which versions and which device (CPU / CUDA GPU) you are running on;
# 2. what the `ci`, `cpu` and `gpu` profiles change, and how to override one field;
# 3. where data caches, checkpoints and results are written, and why runs can resume.
#

# %%
# Colab / a fresh environment: install cxrlab only when it is missing (Colab already has torch)
import importlib.util, subprocess, sys
if importlib.util.find_spec("cxrlab") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                           "cxrlab @ git+https://github.com/cxrlab/cxrlab.git"])

# %% [markdown]
# ## 1. Environment and device
# `cxrlab.info.info_dict()` is what the command `cxrlab info` prints. On Colab choose
# *Runtime → Change runtime type → GPU* before running, then check that `device` says `cuda`.

# %%
# %matplotlib inline
import os
from cxrlab.course import setup
from cxrlab.info import info_dict

prof = setup()  # every notebook starts with this call: profile, home folder, figure style

info = info_dict()
for key in ("cxrlab", "python", "torch", "timm", "grad-cam", "device", "cpu_count", "profile"):
    print(f"{key:>10}: {info[key]}")

# %% [markdown]
# ## 2. Profiles: one code path, three sizes
# Every notebook reads its settings from a **profile**, chosen with the environment variable
# `CXRLAB_PROFILE` (default `ci`):
#
# * `ci` — the *synthetic hospitals* (built in, no download), 64 px images, tiny backbones with
#   random weights, a few epochs. Every notebook runs in a few CPU minutes; this is what the
#   course's tests run, and what the stored outputs in these notebooks come from.
# * `cpu` — the same synthetic study, larger, so that the effects are clear on a laptop.
# * `gpu` — real data where prepared (NIH ChestX-ray14, CheXpert, MIMIC-CXR, SIIM-ACR),
#   224 px, ResNet-50 / EfficientNet-B0 / ViT-B/16 with ImageNet weights, bf16, several seeds.
#
# Only the data source and the sizes change; the code is the same.

# %%
# NBVAL_CHECK_OUTPUT
import pandas as pd
from cxrlab.profiles import PROFILE_NAMES, get_profile

fields = ["data", "image_size", "n_per_hospital", "backbones", "pretrained", "epochs",
          "batch_size", "seeds", "precision"]
table = pd.DataFrame({name: {f: getattr(get_profile(name), f) for f in fields}
                      for name in PROFILE_NAMES})
table

# %% [markdown]
# Any field can be overridden for one run, without editing code: in Python with keyword
# arguments, or from the shell with `CXRLAB_<FIELD>` (for example `CXRLAB_IMAGE_SIZE=128`).
# Wrong names and impossible values fail loudly instead of being ignored:

# %%
# NBVAL_CHECK_OUTPUT
p = get_profile("ci", image_size=96, seeds="0,1")
print(p.name, p.image_size, p.seeds)
try:
    get_profile("ci", image_sise=96)          # a typo
except KeyError as err:
    print("KeyError:", err.args[0][:60], "...")

# %% [markdown]
# ## 3. Where things go
# Data caches, checkpoints and results live under one folder, `$CXRLAB_HOME` (default
# `./.cxrlab`), in three sub-folders. Real data sets are large: on Colab, point `CXRLAB_HOME` at
# your mounted Google Drive so that a disconnected session keeps its work.
#
# Two habits protect finished work:
# * **atomic writes** — a checkpoint or table is written to a temporary file and renamed, so a
#   crash leaves the old file or the new one, never half of one;
# * **resumable runs** — training writes a checkpoint every epoch and continues from it when
#   started again; data preparation skips what is already in the cache.

# %%
from pathlib import Path
for what in ("data_dir", "checkpoint_dir", "results_dir"):
    print(f"{what:>15}: $CXRLAB_HOME/{Path(getattr(prof, what)).name}")

# %% [markdown]
# ## 4. Reproducibility: one seeding helper
# `seed_everything(seed)` seeds Python, NumPy and PyTorch; `loader_seeding(seed)` returns the
# `worker_init_fn` and `generator` that make a multi-worker `DataLoader` repeat exactly. Run the
# next cell twice: the numbers do not change.

# %%
# NBVAL_CHECK_OUTPUT
import numpy as np, torch
from cxrlab.seeding import seed_everything

seed_everything(0)
print(np.random.rand(2).round(4), torch.rand(2).numpy().round(4))

# %% [markdown]
# ## 5. A first look at the data
# The built-in synthetic hospitals stand in for real data on any CPU. The next cell draws four
# images from the *source* hospital (synthetic: phantoms, not patients) with their lung masks.
# Notebook 01 explains what differs between hospitals.

# %%
import matplotlib.pyplot as plt
from cxrlab.data.synthetic import generate

batch = generate("source", 4, image_size=prof.image_size, seed=0)
fig, axes = plt.subplots(1, 4, figsize=(8, 2.3))
for ax, img, lung in zip(axes, batch.images, batch.lung_masks):
    ax.imshow(img, cmap="gray", vmin=0, vmax=255)
    ax.contour(lung, levels=[0.5], colors="c", linewidths=0.6)
    ax.axis("off")
fig.suptitle("SYNTHETIC source hospital: images with lung-mask contours", fontsize=9)
plt.show()

# %% [markdown]
# ## Next
# * `01_domain_shift.ipynb` — what shifts between hospitals, real and synthetic.
# * To use real data, see `data_download/README.md` and `cxrlab data prepare --help`.
