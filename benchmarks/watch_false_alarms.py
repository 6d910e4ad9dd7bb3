"""Alerts raised by ``tunefree.watch`` on the quick suite's runs at each tunefree optimizer's default lr.

These runs are healthy by construction (the default settings the benchmark reports on), so every alert
here is a false alarm or a true statement about a run that trains anyway (e.g. MoMo at its cap). Each run
is the harness's own (``tunefree.bench.runner.run_one``); the watcher is attached to the optimizer at its
first step through torch's global step pre-hook, so the runner is not changed. Run::

    PYTHONPATH=src python benchmarks/watch_false_alarms.py [--every 1] [--tasks lsq_synth ...] [--seeds 1]

Prints one line per run (task, optimizer, status, alerts) and the total count per alert code.
"""

from __future__ import annotations

import argparse
import collections
import warnings

from torch.optim.optimizer import register_optimizer_step_pre_hook

import tunefree
from tunefree.bench.runner import run_one
from tunefree.bench.sweep import build_specs
from tunefree.bench.tasks import available_tasks

TUNEFREE = ("momo", "momo_adam", "smes", "agd", "rsgdm", "gala")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--tasks", nargs="+")
    parser.add_argument("--optimizers", nargs="+", default=list(TUNEFREE))
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()

    watchers: dict[int, tunefree.Watcher] = {}

    def attach(optimizer, args_, kwargs_):
        if id(optimizer) not in watchers:
            watchers[id(optimizer)] = tunefree.watch(optimizer, every=args.every, sinks=[], warn=False)

    handle = register_optimizer_step_pre_hook(attach)
    totals: collections.Counter[str] = collections.Counter()
    runs = 0
    try:
        for task in available_tasks("quick"):
            if args.tasks and task.name not in args.tasks:
                continue
            specs = build_specs(task, task.name, args.optimizers, list(range(args.seeds)), "quick", exponents=[0.0])
            for spec in specs:
                watchers.clear()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = run_one(spec, task)
                alerts = [a for w in watchers.values() for a in w.alerts]
                for w in watchers.values():
                    w.close()
                runs += 1
                totals.update(a.code for a in alerts)
                listed = ", ".join(f"{a.code}@{a.step}" for a in alerts) or "-"
                print(f"{task.name:12s} {spec.optimizer:10s} seed {spec.seed} {result.status:8s} alerts: {listed}")
                for a in alerts:
                    print(f"    {a.message}")
    finally:
        handle.remove()
    print(f"\n{runs} runs, {sum(totals.values())} alerts: {dict(totals) or 'none'}")


if __name__ == "__main__":
    main()
