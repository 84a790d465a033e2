"""Run by tests/test_supcon_ddp.py as ``torchrun --nproc_per_node=2 --standalone -m
tests.scripts.ddp_supcon OUT.json``.

Every rank builds the same global batch and the same small linear encoder, then:

* reference: one process's view -- the encoder on the *whole* batch, ``SupConLoss`` with
  gathering off, loss and gradients (w.r.t. features and encoder weights);
* distributed: the encoder wrapped in DistributedDataParallel sees only this rank's slice;
  ``SupConLoss`` gathers the other ranks' features; DDP averages the weight gradients.

It checks, for equal and unequal slices and both positive rules, that the mean of the
per-rank losses equals the reference loss, that the DDP-averaged weight gradient equals the
reference gradient, and that the feature gradient on each rank equals world_size x the
reference gradient of that slice (see the DDP section of cxrlab.losses.supcon). Rank 0 writes
the largest differences as JSON to ``argv[1]``.
"""
import copy
import json
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from cxrlab.losses.supcon import SupConLoss


def main(out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    B, V, D_in, D, C = 10, 2, 12, 6, 4
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, V, D_in, generator=g, dtype=torch.float64)
    labels = (torch.rand(B, C, generator=g) < 0.4).double()
    labels[0] = 0.0  # no label
    labels[1] = float("nan")  # not labelled at all
    labels[2, 0] = float("nan")
    torch.manual_seed(1)
    encoder = torch.nn.Linear(D_in, D).double()

    results = {"world_size": world}
    splits = {"equal": [5, 5], "unequal": [7, 3]}
    for split_name, sizes in splits.items():
        assert len(sizes) == world, "the script is written for 2 processes"
        start = sum(sizes[:rank])
        sl = slice(start, start + sizes[rank])
        for positives in ("any", "jaccard"):
            # single-process reference on the whole batch
            ref_enc = copy.deepcopy(encoder)
            feats_ref = ref_enc(x)
            feats_ref.retain_grad()
            loss_ref = SupConLoss(positives=positives, gather=False)(feats_ref, labels)
            loss_ref.backward()

            # distributed
            model = DDP(copy.deepcopy(encoder))
            feats = model(x[sl])
            feats.retain_grad()
            loss = SupConLoss(positives=positives)(feats, labels[sl])
            loss.backward()

            loss_mean = loss.detach().clone()
            dist.all_reduce(loss_mean)
            loss_mean /= world
            w_grad = model.module.weight.grad
            b_grad = model.module.bias.grad
            diffs = {
                "loss_ref": loss_ref.item(),
                "loss_ddp_mean": loss_mean.item(),
                "loss_abs_diff": abs(loss_mean.item() - loss_ref.item()),
                "weight_grad_max_diff": (w_grad - ref_enc.weight.grad).abs().max().item(),
                "bias_grad_max_diff": (b_grad - ref_enc.bias.grad).abs().max().item(),
                "weight_grad_norm": ref_enc.weight.grad.norm().item(),
                "feature_grad_max_diff": (feats.grad / world - feats_ref.grad[sl]).abs().max().item(),
            }
            # gather every rank's numbers, keep the worst
            all_diffs = [None] * world
            dist.all_gather_object(all_diffs, diffs)
            key = f"{split_name}/{positives}"
            results[key] = {k: max(d[k] for d in all_diffs) for k in diffs}
    if rank == 0:
        with open(out_path, "w") as fh:
            json.dump(results, fh, indent=1)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    if "LOCAL_RANK" not in os.environ:
        sys.exit("run me with: python -m torch.distributed.run --nproc_per_node=2 --standalone "
                 "-m tests.scripts.ddp_supcon OUT.json (from the repository root)")
    main(sys.argv[1])
