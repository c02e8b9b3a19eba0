"""Head-loss cost: one forward + backward of the losses on a batch of embeddings.

Compares AAM-softmax alone with the proposed objective (AAM + CAA weights +
AM-SupCon + MGDA-UB combination), on a batch of 128 embeddings of dimension 192
(P x K = 64 x 2 speakers), C training speakers (1211: VoxCeleb1 dev). The
embeddings stand in for an encoder output (a leaf tensor), so the figures are the
head overhead only; the full-step overhead against ECAPA-TDNN is bench_train's.

The two variants are timed interleaved (median of each); on a shared, loaded CPU
the absolute figures swing widely, the ratio less so; ``--threads 1`` is steadier there.

Prints TSV rows: figure<TAB>value<TAB>unit<TAB>note.
    python bench/bench_losses.py [--quick] [--device cpu|cuda] [--threads N] [--batch 128] [--dim 192] [--classes 1211]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspk.balance.mgda import mgda_combine  # noqa: E402
from pyspk.losses.caa import caa_weights  # noqa: E402
from pyspk.losses.margin_softmax import MarginSoftmax  # noqa: E402
from pyspk.losses.supcon import am_supcon_loss  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_aam(head, emb, labels):
    shared = emb * 1.0  # a non-leaf, as an encoder output is
    loss, _ = head(shared, labels)
    loss.backward()


def step_proposed(head, emb, labels):
    shared = emb * 1.0
    loss_cls, _ = head(shared, labels)
    weights = caa_weights(shared, labels, head.prototypes)
    loss_con = am_supcon_loss(shared, labels, margin=0.2, temperature=0.07, weights=weights)
    total, _alpha = mgda_combine(loss_cls, loss_con, shared)
    total.backward()


def time_pair_ms(fns, head, emb, labels, device, reps: int, warmup: int) -> list[float]:
    """Median wall time of one call of each function, in ms. The calls alternate
    (a, b, a, b, ...) so that a change of machine load hits both alike."""
    times: list[list[float]] = [[] for _ in fns]
    for i in range(warmup + reps):
        for fn, out in zip(fns, times):
            head.zero_grad(set_to_none=True)
            emb.grad = None
            _sync(device)
            t0 = time.perf_counter()
            fn(head, emb, labels)
            _sync(device)
            if i >= warmup:
                out.append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--classes", type=int, default=1211)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    reps, warmup = (10, 3) if args.quick else (50, 10)

    torch.manual_seed(0)
    head = MarginSoftmax(args.dim, args.classes, kind="aam", margin=0.2, scale=32.0).to(device)
    emb = torch.randn(args.batch, args.dim, device=device, requires_grad=True)
    k = 2
    labels = torch.randperm(args.classes)[: args.batch // k].repeat_interleave(k).to(device)

    aam, prop = time_pair_ms((step_aam, step_proposed), head, emb, labels, device, reps, warmup)
    setup = (
        f"batch {args.batch}x{args.dim}, C={args.classes}, {device.type}, "
        f"{torch.get_num_threads()} threads, median of {reps} interleaved"
    )
    print(f"head_aam_fwd_bwd\t{aam:.3f}\tms\t{setup}")
    print(f"head_proposed_fwd_bwd\t{prop:.3f}\tms\tAAM + CAA + AM-SupCon + MGDA; {setup}")
    print(
        f"head_overhead\t{prop - aam:.3f}\tms\tproposed minus AAM (ratio {prop / aam:.2f}x of the head alone); "
        f"compare with the encoder step time in bench_train (target: full-step overhead <= 10%)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
