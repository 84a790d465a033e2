"""A tiny version of configs/course.yaml for the tests: every part on a few dozen 32 px images
of the synthetic hospitals, the tiny CNN, one seed, one or two epochs (seconds per unit)."""
from __future__ import annotations

from tests.helpers import REPO_ROOT

COURSE_CONFIG = REPO_ROOT / "configs" / "course.yaml"
_SYN = {"image_size": 32}

#: overrides of configs/course.yaml's parts that make the whole course run in about a minute
TINY = {
    "shift": {"synthetic": {**_SYN, "n_per_hospital": 100}, "epochs": 1, "domain_epochs": 1,
              "max_per_domain": 30},
    "probe_supcon": {"synthetic": {**_SYN, "n_per_hospital": 100}, "backbones": ["tiny_cnn"],
                     "methods": ["bce_probe", "bce_finetune"], "finetune_epochs": 1,
                     "probe_epochs": 2, "batch_size": 16, "bootstrap": 10},
    "masking": {"synthetic": {**_SYN, "n_per_hospital": 600}, "seeds": [0], "finetune_epochs": 1,
                "bootstrap": 10, "methods": [
                    {"name": "erm", "method": "bce_finetune", "display": "ERM",
                     "hparams": {"augment": "none", "backbone_lr_scale": 1.0}},
                    {"name": "rrr_periphery", "method": "rrr", "display": "RRR, lung periphery",
                     "hparams": {"mask": "lung_periphery", "lam": 0.1}}]},
    "attention": {"synthetic": {**_SYN, "n_per_hospital": 80}, "epochs": 1, "bootstrap": 10,
                  "max_images": 8, "methods": [
                      {"name": "erm_clean", "method": "bce_finetune", "shortcut": False,
                       "display": "ERM, no shortcut", "hparams": {"augment": "none"}},
                      {"name": "erm_shortcut", "method": "bce_finetune", "shortcut": True,
                       "display": "ERM, shortcut", "hparams": {"augment": "none"}}]},
}
