"""Probe single runs of the harness: one (task, optimizer, lr, kwargs, seed) per line, final metric and lr.

Used to measure optimizer defaults quickly on the standard budgets without a whole sweep (see
docs/optimizers-defaults.md). Each run goes through the harness's own runner (same data, model, budget,
seeding and divergence rule as ``tunefree bench``); the normalised score uses ``m_init`` and ``m*`` given
on the command line (take them from a report of the standard suite, so that ``s`` is comparable).

    PYTHONPATH=src python benchmarks/default_probe.py --task mlp_mnist1d --optimizer smes \
        --lr 1e-3 1e-2 --kwargs '{"alpha": 0.25}' --m-init 0.10083 --m-star 0.87146

Prints one JSON object per run: lr, status, final validation metric, score s, final adapted lr (GALA).
"""

from __future__ import annotations

import argparse
import json
import math
import time

from tunefree.bench.runner import run_one
from tunefree.bench.sweep import build_specs, resolve_task
from tunefree.optim.registry import get_optimizer_info


def score(metric: float, m_init: float, m_star: float) -> float:
    """s = (m_init - m) / (m_init - m*): the same form for losses and accuracies (the signs cancel)."""
    if not math.isfinite(metric):
        return -math.inf
    return (m_init - metric) / (m_init - m_star)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--optimizer", required=True)
    parser.add_argument("--lr", type=float, nargs="+", required=True)
    parser.add_argument("--kwargs", default="{}", help="JSON of extra optimizer kwargs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suite", default="standard")
    parser.add_argument("--m-init", type=float, default=math.nan)
    parser.add_argument("--m-star", type=float, default=math.nan)
    parser.add_argument("--tag", default="", help="free text copied into every output line")
    args = parser.parse_args()

    task = resolve_task(args.task)
    default = get_optimizer_info(args.optimizer).default_lr
    exponents = [math.log10(lr / default) for lr in args.lr]
    kwargs = json.loads(args.kwargs)
    specs = build_specs(task, args.task, [args.optimizer], [args.seed], args.suite, exponents,
                        optimizer_kwargs={args.optimizer: kwargs} if kwargs else None)
    for spec in specs:
        start = time.perf_counter()
        result = run_one(spec, task)
        metric = (result.final_val or {}).get(task.metric, math.nan) if result.status == "ok" else math.nan
        lr_trace = result.stats.get("lr", ([], []))[1]
        print(json.dumps({
            "tag": args.tag, "task": args.task, "optimizer": args.optimizer, "kwargs": kwargs,
            "lr": spec.lr, "seed": args.seed, "status": result.status, "metric": metric,
            "s": round(score(metric, args.m_init, args.m_star), 4),
            "final_lr": lr_trace[-1] if lr_trace else None,
            # the adapted lr at 8 evenly spaced points of the (subsampled) trace
            "lr_trace": [float(f"{lr_trace[i * (len(lr_trace) - 1) // 7]:.3g}") for i in range(8)]
            if lr_trace else None,
            "wall_s": round(time.perf_counter() - start, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
