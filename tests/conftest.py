import os

# CI-safe defaults for every test: no progress bars, headless plots, one thread per op
# (the machine has two cores; pytest itself is the parallel unit).
os.environ.setdefault("CXRLAB_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
