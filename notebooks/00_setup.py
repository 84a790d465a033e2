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
# **Learning goals.** After this notebook you can
# 1. say which versions and which device (CPU / CUDA GPU) you are running on;
# 2. choose a profile (`ci`, `cpu`, `gpu`), read what it changes, and override one field;
# 3. say where data caches, checkpoints and results are written (locally and on Colab), and why
#    runs can resume;
# 4. make a result repeat exactly with one seeding call.
#
# **Time** (run all cells): `ci` about 10 seconds on a 2-core CPU (measured: 11 s; the stored
# outputs come from it); `cpu` and `gpu` about the same (estimate: this notebook trains nothing;
# on Colab add a minute for the install cell and the Google Drive prompt).

# %%
# Colab / a fresh environment: install cxrlab only when it is missing (Colab already has torch)
import importlib.util, subprocess, sys
if importlib.util.find_spec("cxrlab") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                           "cxrlab @ git+https://github.com/cxrlab/cxrlab.git"])

# %% [markdown]
# ## 1. Profile, home folder and environment: one call
# Every notebook starts with `prof = setup()` from `cxrlab.course`. It
# * picks the profile: `setup("cpu")`, or the environment variable `CXRLAB_PROFILE`, else `ci`;
# * picks the home folder for data caches, checkpoints and results: `setup(home="~/cxrlab")`, or
#   `CXRLAB_HOME`, else `./.cxrlab` locally. **On Colab** it mounts your Google Drive (you are
#   asked once) and uses `MyDrive/cxrlab`, so a disconnected runtime loses no finished work;
# * sets the figure style (100 dpi, readable fonts) and prints one line saying what runs.
#
# On Colab choose *Runtime → Change runtime type → GPU* before running, then check that `device`
# below says `cuda`. `cxrlab.info.info_dict()` is what the command `cxrlab info` prints.

# %%
# %matplotlib inline
from cxrlab.course import COLAB_DRIVE_HOME, in_colab, setup, short_path
from cxrlab.info import info_dict

prof = setup()  # e.g. setup("cpu") or setup(home="~/cxrlab"); on Colab: Google Drive

info = info_dict()
for key in ("cxrlab", "python", "torch", "timm", "grad-cam", "device", "cpu_count", "profile"):
    print(f"{key:>10}: {info[key]}")
print(f"{'colab':>10}: {in_colab()} (on Colab the home folder would be {COLAB_DRIVE_HOME})")

# %% [markdown]
# ## 2. Profiles: one code path, three sizes
# Every notebook reads its sizes from the **profile**. Only the data source and the sizes
# change; the code is the same. The table is read from `cxrlab.profiles`, so it is what the
# notebooks will use (including any `CXRLAB_<FIELD>` override you set):

# %%
# NBVAL_CHECK_OUTPUT
from cxrlab.profiles import PROFILE_NAMES, get_profile, profile_table

table = profile_table()
table

# %%
from cxrlab.claims import claim

ci, gpu = get_profile("ci"), get_profile("gpu")
claim(f"`ci` draws {ci.n_per_hospital:,} images per synthetic hospital at {ci.image_size} px and "
      f"trains {ci.epochs} epochs", ci.data == "synthetic", images=ci.n_per_hospital, px=ci.image_size,
      epochs=ci.epochs)
claim("`ci` and `cpu` use the course's pretrained stand-in backbones, `gpu` ImageNet weights of "
      "the real models", all(get_profile(n).pretrained for n in PROFILE_NAMES)
      and all(b.startswith("tiny_") for b in ci.backbones)
      and not any(b.startswith("tiny_") for b in gpu.backbones),
      ci=", ".join(ci.backbones), gpu=", ".join(gpu.backbones));

# %% [markdown]
# * `ci` — the *synthetic hospitals* (built in, no download), small images, the tiny backbones
#   with the course's own **pretrained stand-in weights** (trained by a script in this repository
#   on synthetic hospitals the course never tests on, the way real models start from ImageNet).
#   Every notebook runs in a few CPU minutes; this is what the course's tests run, and what the
#   stored outputs in these notebooks come from.
# * `cpu` — the same synthetic study, larger and with three seeds, so that the effects are clear
#   on a laptop.
# * `gpu` — real data where prepared (NIH ChestX-ray14, CheXpert, MIMIC-CXR, SIIM-ACR; without
#   prepared caches it falls back to the synthetic hospitals and says so), ResNet-50 /
#   EfficientNet-B0 / ViT-B/16 with ImageNet weights, bf16, several seeds.
#
# A notebook may need more than its profile gives (notebook 01 needs three seeds for its
# intervals); it then prints what it changes and why, instead of silently using other numbers.
#
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
# Data caches, checkpoints and results live under one home folder, in three sub-folders. Real
# data sets are large: on Colab, `setup()` has put the home folder on your Google Drive. This is
# where *this* session writes (paths shown relative to the notebook's folder or as `~`):

# %%
from pathlib import Path

for what in ("data_dir", "checkpoint_dir", "results_dir"):
    print(f"{what:>15}: {short_path(getattr(prof, what))}")
claim("the three folders share one home folder", len({Path(getattr(prof, w)).parent for w in
      ("data_dir", "checkpoint_dir", "results_dir")}) == 1, home=short_path(Path(prof.data_dir).parent));

# %% [markdown]
# Two habits protect finished work:
# * **atomic writes** — a checkpoint or table is written to a temporary file and renamed, so a
#   crash leaves the old file or the new one, never half of one;
# * **resumable runs** — training writes a checkpoint every epoch and continues from it when
#   started again; data preparation skips what is already in the cache.
#
# ## 4. Reproducibility: one seeding helper
# `seed_everything(seed)` seeds Python, NumPy and PyTorch; `loader_seeding(seed)` returns the
# `worker_init_fn` and `generator` that make a multi-worker `DataLoader` repeat exactly. The next
# cell draws twice with the same seed: the numbers are the same.

# %%
# NBVAL_CHECK_OUTPUT
import numpy as np, torch
from cxrlab.seeding import seed_everything

seed_everything(0)
first = (np.random.rand(2).round(4), torch.rand(2).numpy().round(4))
seed_everything(0)
again = (np.random.rand(2).round(4), torch.rand(2).numpy().round(4))
print(first)
_ = claim("the same seed gives the same numbers", all(np.array_equal(a, b) for a, b in zip(first, again)))

# %% [markdown]
# ## 5. A first look at the data
# The built-in synthetic hospitals stand in for real data on any CPU. The next cell draws four
# images from the *source* hospital (SYNTHETIC: phantoms, not patients) with their lung masks.
# Notebook 01 explains what differs between hospitals.

# %%
import matplotlib.pyplot as plt
from cxrlab.data.synthetic import generate

batch = generate("source", 4, image_size=prof.image_size, seed=0)
fig, axes = plt.subplots(1, 4, figsize=(8, 2.4))
for ax, img, lung in zip(axes, batch.images, batch.lung_masks):
    ax.imshow(img, cmap="gray", vmin=0, vmax=255)
    ax.contour(lung, levels=[0.5], colors="c", linewidths=0.8)
    ax.axis("off")
fig.suptitle(f"SYNTHETIC source hospital: {prof.image_size} px images with lung-mask contours "
             "(cyan)", fontsize=10)
plt.show()

# %% [markdown]
# ## What we saw
# * This session runs the profile printed by `setup()`; under `ci` that is the synthetic
#   hospitals with pretrained stand-in backbones, and every number in the stored outputs of the
#   course comes from it.
# * The profile table is read from `cxrlab.profiles`: `ci` draws 1,000 images per hospital at
#   64 px and trains 3 epochs; `cpu` and `gpu` are larger and use three seeds.
# * Caches, checkpoints and results share one home folder (Google Drive on Colab).
# * Seeding once makes the random numbers repeat exactly.

# %%
claim("`ci`: 1,000 images per hospital at 64 px, 3 epochs; `cpu` and `gpu`: three seeds",
      (ci.n_per_hospital, ci.image_size, ci.epochs) == (1000, 64, 3)
      and len(get_profile("cpu").seeds) == len(gpu.seeds) == 3,
      images=ci.n_per_hospital, px=ci.image_size, epochs=ci.epochs);

# %% [markdown]
# ## What transfers to real data
# * The same notebooks run on real data under `gpu`: only the profile changes. Prepare the
#   caches first (`data_download/README.md`, `cxrlab data prepare --help`); credentials are
#   needed for MIMIC-CXR and CheXpert.
# * Real caches are tens of gigabytes: keep the home folder on a disk that survives the session
#   (Google Drive on Colab, a project folder on a cluster), and let runs resume.
# * Seeds make a run repeatable on one machine; GPUs and library versions can still change the
#   last digits, which is one more reason the course reports intervals over seeds.
#
# ## Exercises
# Each exercise has a solution in the next cell (click to reveal in Jupyter).
#
# ### Exercise 1 · Override a field
# Get the `ci` profile with 96 px images and two seeds, and print how it differs from the plain
# `ci` profile.

# %% tags=["solution"] jupyter={"source_hidden": true}
mine = get_profile("ci", image_size=96, seeds=(0, 1))
plain = get_profile("ci")
print({f: (getattr(plain, f), getattr(mine, f)) for f in ("image_size", "seeds")
       if getattr(plain, f) != getattr(mine, f)})

# %% [markdown]
# ### Exercise 2 · Where would Colab write?
# Without running on Colab: which folder would `setup()` use there, and which would it use if
# you had set `CXRLAB_HOME` before? (Read `help(setup)`.)

# %% tags=["solution"] jupyter={"source_hidden": true}
print(f"Colab, CXRLAB_HOME unset: {COLAB_DRIVE_HOME} (Google Drive, mounted by setup())")
print("Colab, CXRLAB_HOME set: that folder; Drive is not mounted (mount it yourself if the folder is on Drive)")

# %% [markdown]
# ### Exercise 3 · Another seed, another draw
# Seed with 1 instead of 0: do the numbers change? And do they repeat when you seed with 1 again?

# %% tags=["solution"] jupyter={"source_hidden": true}
seed_everything(1)
one = np.random.rand(2).round(4)
seed_everything(1)
print(one, np.random.rand(2).round(4), "differs from seed 0:", not np.array_equal(one, first[0]))

# %% [markdown]
# ### Exercise 4 · A target hospital
# Draw four images of `target_old` the same way as in section 5. What differs at first sight?

# %% tags=["solution"] jupyter={"source_hidden": true}
old = generate("target_old", 4, image_size=prof.image_size, seed=0)
fig, axes = plt.subplots(1, 4, figsize=(8, 2.4))
for ax, img in zip(axes, old.images):
    ax.imshow(img, cmap="gray", vmin=0, vmax=255)
    ax.axis("off")
fig.suptitle("SYNTHETIC target_old: brighter, lower contrast, noisier, 'AP PORT' text", fontsize=10)
plt.show()

# %% [markdown]
# ## Next
# * `01_domain_shift.ipynb` — what shifts between hospitals, real and synthetic.
# * To use real data, see `data_download/README.md` and `cxrlab data prepare --help`.
