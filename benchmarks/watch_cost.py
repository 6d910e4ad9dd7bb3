"""What ``tunefree.watch`` costs per optimizer step: no watcher, ``every=10`` and ``every=1``.

Times consecutive ``step(loss=...)`` calls of each optimizer on an MLP (gradients computed once and reused,
so only the optimizer step and the watcher's hooks are timed). On a GPU each read of the stats waits for
the device (the watcher's one host synchronisation); the timing synchronises once at the end of each
block of steps, so the figures show the stall that ``every=1`` adds. Run::

    PYTHONPATH=src python benchmarks/watch_cost.py [--device cuda] [--width 1024] [--steps 200] [--repeats 5]

Prints, per optimizer, the median time per step (microseconds) and the overhead of each setting.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import tunefree

OPTIMIZERS = ("momo", "momo_adam", "smes", "agd", "rsgdm")  # GALA needs a re-evaluating closure


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(name: str, every: int | None, args: argparse.Namespace) -> float:
    """Median seconds per step over ``args.repeats`` blocks of ``args.steps`` steps."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    width = args.width
    model = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                          nn.Linear(width, 1)).to(device)
    x = torch.randn(64, width, device=device)
    loss = model(x).pow(2).mean()
    loss.backward()
    loss = loss.detach()
    optimizer = tunefree.create_optimizer(name, model.parameters(), nonfinite="off")
    watcher = tunefree.watch(optimizer, every=every, sinks=[], warn=False) if every else None
    for _ in range(10):  # warm-up: state allocation, caches
        optimizer.step(loss=loss)
    blocks = []
    for _ in range(args.repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            optimizer.step(loss=loss)
        _sync(device)
        blocks.append((time.perf_counter() - start) / args.steps)
    if watcher is not None:
        watcher.close()
    return statistics.median(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS))
    args = parser.parse_args()
    params = 2 * args.width * args.width + 3 * args.width + 1
    print(f"device {args.device}, MLP {params:,} parameters, {args.steps} steps x {args.repeats} blocks, median")
    print(f"{'optimizer':10s} {'none us':>9s} {'every=10 us':>12s} {'(+%)':>7s} {'every=1 us':>11s} {'(+%)':>7s}")
    for name in args.optimizers:
        base, ten, one = (time_steps(name, every, args) for every in (None, 10, 1))
        print(f"{name:10s} {base * 1e6:9.1f} {ten * 1e6:12.1f} {100 * (ten / base - 1):+6.1f}% "
              f"{one * 1e6:11.1f} {100 * (one / base - 1):+6.1f}%")


if __name__ == "__main__":
    main()
