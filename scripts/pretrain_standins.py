"""Pre-train the tiny stand-in backbones (tiny_cnn, tiny_resnet, tiny_vit) and write their
weights as package data, so that ``create_backbone("tiny_cnn", pretrained=True)`` gives the
``ci`` / ``cpu`` profiles what ImageNet weights give the ``gpu`` profile: a representation
learnt elsewhere, then frozen or fine-tuned on the course's source hospital.

The analogue we chose, and why: **supervised pre-training across many hospitals**, as
torchxrayvision's models are trained on eight public chest X-ray data sets. The pre-training
corpus is drawn from ``N_HOSPITALS`` *pre-training hospitals* whose acquisition and population
parameters are sampled at random (seeded) over ranges as wide as the course's four hospitals;
they share no hospital, no generator seed and so no image with the course's hospitals
(``source``, ``target_nih``, ``target_old``, ``target_lowres``), and the chest-drain shortcut is
never drawn. The task is the 14 NIH findings with masked BCE (cxrlab.methods ``bce_finetune``,
trained by cxrlab.engine.fit). ImageNet pre-training is self-supervised-or-supervised on *other*
images; a stand-in trained on other *chest X-rays* is the closer analogue of what the real
course compares (ImageNet features vs features adapted to CXR) and is what makes a frozen
linear probe meaningful at 64 px.

Run (about 10-20 CPU minutes for the three models):

    python scripts/pretrain_standins.py                # writes cxrlab/models/standins/
    python scripts/pretrain_standins.py --quick --out /tmp/standins   # a smoke run

Writes ``<name>.safetensors`` (backbone weights only, no head) and ``manifest.json`` (the
command, the generator version, the pre-training hospitals, settings, validation AUC and each
file's SHA-256), which ``cxrlab.models.standins`` checks when it loads them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

MODELS = ("tiny_cnn", "tiny_resnet", "tiny_vit")
N_HOSPITALS = 12
#: generator seeds of the pre-training corpus: far from every seed the course uses (0..99)
SEED_BASE = 7_000_000


def pretraining_hospitals(n: int = N_HOSPITALS, seed: int = SEED_BASE):
    """``n`` random hospital specs (no shortcut), parameters drawn uniformly over ranges that
    cover the course's hospitals (see docs/synthetic_hospitals.md)."""
    from cxrlab.data.synthetic import HospitalSpec
    from cxrlab.labels import NIH14

    rng = np.random.default_rng(seed)
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    specs = []
    for k in range(n):
        specs.append(HospitalSpec(
            name=f"pretrain_{k:02d}",
            description="pre-training hospital (random parameters; not a course hospital)",
            age_mean=u(35, 78), age_sd=u(8, 18), p_male=u(0.4, 0.6), p_ap=u(0.05, 0.9),
            images_per_patient=u(1.5, 4.0),
            prevalence_factor={lab: float(np.exp(rng.normal(0, 0.6))) for lab in NIH14},
            contrast=u(3.0, 7.0), window=u(0.48, 0.64), gamma=u(0.8, 1.3),
            exposure=u(-0.08, 0.1), exposure_sd=u(0.02, 0.08), noise=u(0.01, 0.05),
            blur=u(0.001, 0.007), resolution=u(0.45, 1.0), collimation=u(0.0, 0.1),
            collimation_value=int(rng.choice([0, 255])),
            marker=str(rng.choice(["", "L", "R"])),
            marker_corner=str(rng.choice(["tl", "tr", "bl", "br"])),
            text=str(rng.choice(["", "", "PA", "PORTABLE", "SUPINE"])),
            text_corner=str(rng.choice(["tl", "tr", "bl", "br"])),
            shortcut_pos=0.0, shortcut_neg=0.0,
        ))
    return specs


def corpus(n_per_hospital: int, image_size: int, seed: int = SEED_BASE):
    """Images [N,1,S,S] uint8, NIH14 labels [N,14] and the hospital of each image."""
    from cxrlab.data.synthetic import generate

    imgs, labels, where = [], [], []
    for k, spec in enumerate(pretraining_hospitals(seed=seed)):
        b = generate(spec, n_per_hospital, image_size, seed=seed + 1 + k)
        imgs.append(b.images)
        labels.append(b.labels)
        where += [spec.name] * len(b)
    x = torch.from_numpy(np.concatenate(imgs))[:, None]
    y = torch.from_numpy(np.concatenate(labels).astype(np.float32))
    return x, y, np.array(where)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "cxrlab" / "models"
                                         / "standins"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--n-per-hospital", type=int, default=1500)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--quick", action="store_true", help="a smoke run: tiny corpus, 1 epoch")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_per_hospital, args.epochs = 40, 1

    from safetensors.torch import save_file

    from cxrlab.data.synthetic import GENERATOR_VERSION
    from cxrlab.engine import fit, make_val_fn
    from cxrlab.methods import create_algorithm
    from cxrlab.models import create_backbone
    from cxrlab.models.weights import file_sha256

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    x, y, where = corpus(args.n_per_hospital, args.image_size)
    # hold out every 10th image for the validation AUC reported in the manifest
    val = np.arange(len(x)) % 10 == 0
    train = (x[~val], y[~val])
    manifest = {
        "what": "tiny stand-in backbones pre-trained with supervised multi-label BCE (14 NIH "
                "findings) on synthetic pre-training hospitals that share no hospital, seed or "
                "image with the course's four hospitals; the analogue of torchxrayvision's "
                "multi-data-set CXR pre-training",
        "command": "python scripts/" + Path(__file__).name + " " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "generator_version": GENERATOR_VERSION,
        "hospitals": [dataclasses.asdict(s) for s in pretraining_hospitals()],
        "seed_base": SEED_BASE, "n_images": int(len(x)), "n_train": int((~val).sum()),
        "image_size": args.image_size, "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "method": "bce_finetune", "models": {},
    }
    for name in args.models.split(","):
        torch.manual_seed(0)
        bb = create_backbone(name, image_size=args.image_size, seed=0)
        alg = create_algorithm("bce_finetune", bb, num_labels=14,
                               hparams={"backbone_lr_scale": 1.0, "augment": "light"}, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            res = fit(alg, train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=1e-4, seed=0, out_dir=tmp, device="cpu", verbose=True,
                      val_fn=make_val_fn((x[val], y[val])), monitor="auc_macro")
        state = {k: v.contiguous() for k, v in alg.backbone.model.state_dict().items()}
        path = out / f"{name}.safetensors"
        save_file(state, str(path))
        manifest["models"][name] = {
            "file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size,
            "val_auc_macro": round(res.history[-1]["val_auc_macro"], 4),
            "history": [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()}
                        for h in res.history],
        }
        print(f"{name}: val AUC {res.history[-1]['val_auc_macro']:.3f} -> {path}")
    manifest["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
