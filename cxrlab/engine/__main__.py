"""Train one method on one cache from the command line; works the same under ``torchrun``.

    python -m cxrlab.engine --cache .cxrlab/data/synth --domain source \\
        --algorithm bce_finetune --backbone tiny_cnn --epochs 3 --out .cxrlab/checkpoints/ft

    torchrun --standalone --nproc_per_node=2 -m cxrlab.engine --cache ... --out ...

Unset options come from the active profile (``--profile`` or ``$CXRLAB_PROFILE``). Running the
same command again resumes from ``--out/last.pt``. ``--backbone`` takes a registered name
(``cxrlab.models.list_backbones()``) or ``package.module:factory``, a function returning a
backbone. Rank 0 prints a JSON summary at the end.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cxrlab.engine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="cache folder (cxrlab data synth / prepare)")
    p.add_argument("--out", required=True, help="checkpoint folder")
    p.add_argument("--algorithm", default="bce_finetune", help="bce_probe, bce_finetune, supcon, ...")
    p.add_argument("--backbone", default="tiny_cnn")
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--weights", default=None, help="local weight file for the backbone")
    p.add_argument("--hparams", default="{}", help='JSON, e.g. \'{"backbone_lr_scale": 0.1}\'')
    p.add_argument("--label-space", default="shared7")
    p.add_argument("--domain", default=None, help="training domain(s), comma-separated (default: all)")
    p.add_argument("--split", default="train")
    p.add_argument("--val-split", default="val", help="'none' to skip validation")
    p.add_argument("--in-memory", action="store_true", help="load the images into RAM first")
    p.add_argument("--profile", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch (all ranks)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--precision", default=None, choices=["fp32", "bf16"])
    p.add_argument("--compile", nargs="?", const=True, default=False,
                   help="torch.compile the backbone (optionally: a backend name)")
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--grad-clip", type=float, default=None)
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    p.add_argument("--monitor", default=None, help="validation metric to keep best.pt by (e.g. auc_macro)")
    p.add_argument("--monitor-mode", default="max", choices=["max", "min"])
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--keep-epochs", action="store_true")
    p.add_argument("--no-resume", action="store_true", help="start over, deleting --out's checkpoints")
    p.add_argument("--quiet", action="store_true")
    return p


def make_backbone(spec: str, *, pretrained: bool, weights, image_size: int, seed: int):
    if ":" in spec:
        mod, attr = spec.split(":", 1)
        return getattr(importlib.import_module(mod), attr)()
    from cxrlab.models import create_backbone

    return create_backbone(spec, pretrained=pretrained, weights=weights, image_size=image_size,
                           seed=seed)


def main(argv=None, cleanup: bool = True) -> int:
    """Parse ``argv`` and train. ``cleanup=False`` keeps the process group for another run
    in the same torchrun program."""
    args = build_parser().parse_args(argv)
    from cxrlab.profiles import get_profile
    from cxrlab.data.cache import open_cache
    from cxrlab.data.dataset import CacheDataset, load_arrays
    from cxrlab.engine import distributed as D
    from cxrlab.engine.predict import make_val_fn
    from cxrlab.engine.trainer import fit
    from cxrlab.labels import get_label_space
    from cxrlab.methods import create_algorithm

    prof = get_profile(args.profile)
    cache = open_cache(args.cache)
    domain = args.domain.split(",") if args.domain else None
    labels = get_label_space(args.label_space)

    def data(split):
        rows = cache.select(split=split, domain=domain)
        if len(rows) == 0:
            raise SystemExit(f"no {split!r} images for domain {domain} in {cache.path}")
        if args.in_memory:
            return load_arrays(cache, rows, args.label_space)
        return CacheDataset(cache, rows, args.label_space)

    backbone = make_backbone(args.backbone, pretrained=args.pretrained, weights=args.weights,
                             image_size=cache.image_size, seed=args.seed)
    algorithm = create_algorithm(args.algorithm, backbone, len(labels), json.loads(args.hparams))
    precision = args.precision or prof.precision
    val_fn = None
    if args.val_split != "none" and algorithm.can_predict:
        val_fn = make_val_fn(data(args.val_split), precision=precision, label_names=labels)
    try:
        result = fit(
            algorithm, data(args.split), epochs=args.epochs or prof.epochs,
            batch_size=args.batch_size or prof.batch_size, lr=args.lr or prof.lr,
            weight_decay=args.weight_decay, seed=args.seed, out_dir=args.out,
            device=args.device or prof.device, precision=precision, compile=args.compile,
            num_workers=prof.num_workers if args.num_workers is None else args.num_workers,
            val_fn=val_fn, monitor=args.monitor if val_fn else None,
            monitor_mode=args.monitor_mode, log_every=args.log_every,
            schedule=args.schedule, warmup_steps=args.warmup_steps, grad_clip=args.grad_clip,
            optimizer=args.optimizer, resume=not args.no_resume, keep_epochs=args.keep_epochs,
            verbose=not args.quiet,
        )
        if D.is_main():
            print(json.dumps({"out_dir": str(result.out_dir), "epochs": len(result.history),
                              "resumed_from": result.resumed_from, "global_step": result.global_step,
                              "images_seen": result.images_seen, "final": result.final,
                              "best_epoch": result.best_epoch}, default=str))
    finally:
        if cleanup:
            D.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
