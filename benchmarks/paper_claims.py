"""The numbers that decide each paper's headline claim, read from benchmark ledgers.

``docs/results/claims.md`` states, per paper, the claim and a verdict (holds / partly / not here); this
script prints the figures those verdicts rest on, so anyone can rebuild them from the committed ledgers:

    python benchmarks/paper_claims.py --standard docs/results/standard \\
        --smes-alpha docs/results/smes-alpha --gala-range docs/results/gala-range > claims-numbers.md

Everything is computed by the report's own scoring (:func:`tunefree.bench.summarise`): scores ``s`` relative
to the best tuned baseline (SGD-M, Adam, AdamW) of each task, W95 in decades of lr, "one-shot" = the
default lr reaches ``s >= 0.95``. Only constant-schedule settings are compared unless a table says so.

- **MoMo** (wider good-lr range than SGD-M/Adam): W95 of momo, momo_adam, sgd, adam per task.
- **SMES** (the exponent spans SGD-M..Adam; a middle value is better): tuned s and W95 of
  ``alpha`` = 0, 0.25 (default), 0.5 per task (``--smes-alpha``: ``--vary smes.alpha=0,0.5``).
- **AGD** (the auto-switch beats SGD-M and AdamW): tuned and default s of agd, sgd, adamw.
- **RSGDM** (the correction beats SGD-M): tuned s, default s and W95 of rsgdm and sgd.
- **GALA** (robust across initial lrs 1e-5..1, competitive without tuning): per task, the share of lr
  points in [1e-5, 1] with ``s >= 0.95`` and the worst s there (``--gala-range``), default s, and the
  equal-compute figures (half the steps) from the standard ledger.
- **Peers**: per task the best W95 and default s among tunefree's methods, the peers and the baselines.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from tunefree.bench import summarise
from tunefree.bench.report.document import Table, markdown_table
from tunefree.bench.report.equal_compute import equal_compute
from tunefree.bench.report.scoring import TARGET, OptimizerSummary, TaskSummary

TUNEFREE = ("momo", "momo_adam", "smes", "agd", "rsgdm", "gala", "gala_adam")
BASELINES = ("sgd", "adam", "adamw")
PEERS = ("prodigy", "dadapt_adam", "schedulefree_adamw", "momo_opt")


def _fmt(value: Optional[float], digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "div." if value < 0 else "inf"
    return f"{value:.{digits}g}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    return markdown_table(Table.of(header, list(rows)))


def _setting(ts: TaskSummary, label: str) -> Optional[OptimizerSummary]:
    return next((o for o in ts.optimizers if o.label == label), None)


def _constant(tasks: list[TaskSummary]) -> list[TaskSummary]:
    return [ts for ts in tasks if any(o.schedule == "constant" for o in ts.optimizers)]


def _per_task(tasks: list[TaskSummary], labels: Sequence[str], field: str) -> str:
    """One row per task, one column per label: ``field`` of each setting; then the mean over tasks."""
    rows, columns = [], {label: [] for label in labels}
    for ts in tasks:
        row = [ts.task]
        for label in labels:
            found = _setting(ts, label)
            value = getattr(found, field) if found is not None else math.nan
            columns[label].append(value)
            row.append(_fmt(value))
        rows.append(row)
    means = []
    for label in labels:
        finite = [v for v in columns[label] if not math.isnan(v)]
        means.append(_fmt(float(np.mean(finite))) if finite and all(math.isfinite(v) for v in finite) else "-")
    rows.append(["**mean**", *means])
    return _table(["task", *labels], rows)


def _wins(tasks: list[TaskSummary], label: str, others: Sequence[str], field: str) -> str:
    """'label beats X on a/b tasks' for each of ``others`` by ``field`` (strictly greater)."""
    parts = []
    for other in others:
        both = [(_setting(ts, label), _setting(ts, other)) for ts in tasks]
        pairs = [(getattr(a, field), getattr(b, field)) for a, b in both if a is not None and b is not None]
        wins = sum(a > b for a, b in pairs)
        parts.append(f"{label} > {other} on {wins}/{len(pairs)} tasks")
    return "; ".join(parts)


def _one_shot(tasks: list[TaskSummary], labels: Sequence[str]) -> str:
    parts = []
    for label in labels:
        found = [_setting(ts, label) for ts in tasks]
        ran = [o for o in found if o is not None]
        parts.append(f"{label} {sum(o.default_score >= TARGET for o in ran)}/{len(ran)}")
    return "one-shot (default lr reaches s >= 0.95): " + ", ".join(parts)


def momo_section(tasks: list[TaskSummary]) -> str:
    labels = ("momo", "momo_adam", "momo_opt", "sgd", "adam")
    return "\n\n".join([
        "## MoMo: W95 [decades] per task", _per_task(tasks, labels, "w95"),
        _wins(tasks, "momo", ("sgd", "adam"), "w95") + "; " + _wins(tasks, "momo_adam", ("adam",), "w95"),
        _one_shot(tasks, labels),
    ])


def smes_section(tasks: list[TaskSummary]) -> str:
    labels = ['smes {"alpha": 0}', "smes", 'smes {"alpha": 0.5}', "sgd", "adam"]
    present = [label for label in labels if any(_setting(ts, label) for ts in tasks)]
    middle = 0
    decided = 0
    for ts in tasks:
        ends = [_setting(ts, label) for label in ('smes {"alpha": 0}', 'smes {"alpha": 0.5}')]
        mid = _setting(ts, "smes")
        if mid is None or any(e is None for e in ends):
            continue
        decided += 1
        middle += mid.tuned_score > max(e.tuned_score for e in ends)
    return "\n\n".join([
        "## SMES: tuned s per task (alpha 0 / 0.25 default / 0.5)", _per_task(tasks, present, "tuned_score"),
        "## SMES: W95 [decades] per task", _per_task(tasks, present, "w95"),
        f"alpha 0.25 has the best tuned s of the three exponents on {middle}/{decided} tasks.",
        _one_shot(tasks, present),
    ])


def agd_section(tasks: list[TaskSummary]) -> str:
    labels = ("agd", "sgd", "adamw")
    return "\n\n".join([
        "## AGD: tuned s per task", _per_task(tasks, labels, "tuned_score"),
        "## AGD: default s per task", _per_task(tasks, labels, "default_score"),
        _wins(tasks, "agd", ("sgd", "adamw"), "tuned_score") + " (tuned s)",
    ])


def rsgdm_section(tasks: list[TaskSummary]) -> str:
    labels = ("rsgdm", "sgd")
    return "\n\n".join([
        "## RSGDM: tuned s per task", _per_task(tasks, labels, "tuned_score"),
        "## RSGDM: W95 [decades] per task", _per_task(tasks, labels, "w95"),
        _wins(tasks, "rsgdm", ("sgd",), "tuned_score") + " (tuned s); "
        + _wins(tasks, "rsgdm", ("sgd",), "w95") + " (W95)",
        _one_shot(tasks, labels),
    ])


def gala_range_section(tasks: list[TaskSummary], low: float = 1e-5, high: float = 1.0) -> str:
    rows = []
    for ts in tasks:
        for label in ("gala", "gala_adam"):
            found = _setting(ts, label)
            if found is None:
                continue
            inside = [s for lr, s in zip(found.lrs, found.mean_scores) if low * 0.999 <= lr <= high * 1.001]
            if not inside:
                continue
            good = sum(s >= TARGET for s in inside)
            rows.append([ts.task, label, f"{good}/{len(inside)}", _fmt(min(inside)), _fmt(found.default_score),
                         _fmt(found.w95)])
    return "\n\n".join([
        f"## GALA over initial lrs {low:g}..{high:g} (half-decade points)",
        _table(["task", "setting", "points with s >= 0.95", "worst s", "default s", "W95"], rows),
    ])


def equal_compute_section(tasks: list[TaskSummary]) -> str:
    rows = []
    for ts in tasks:
        for full, half, step in equal_compute(ts):
            rows.append([ts.task, full.label, f"{ts.steps}/{step}", _fmt(full.default_score), _fmt(half.default_score),
                         _fmt(full.w95), _fmt(half.w95)])
    return "\n\n".join([
        "## GALA at equal compute (half the steps; baselines at full steps)",
        _table(["task", "setting", "steps full/half", "default s", "default s (half)", "W95", "W95 (half)"], rows),
    ])


def peers_section(tasks: list[TaskSummary]) -> str:
    rows = []
    for ts in tasks:
        cells = [ts.task]
        for family in (TUNEFREE, PEERS, BASELINES):
            found = [o for o in (_setting(ts, label) for label in family) if o is not None]
            if not found:
                cells += ["-", "-"]
                continue
            widest = max(found, key=lambda o: o.w95)
            best_default = max(found, key=lambda o: o.default_score)
            cells += [f"{_fmt(widest.w95)} ({widest.label})",
                      f"{_fmt(best_default.default_score)} ({best_default.label})"]
        rows.append(cells)
    header = ["task", "tunefree: widest W95", "tunefree: best default s", "peers: widest W95",
              "peers: best default s", "baselines: widest W95", "baselines: best default s"]
    labels = TUNEFREE + PEERS + BASELINES
    return "\n\n".join(["## Peers beside tunefree and the baselines", _table(header, rows),
                        "## W95 [decades] of every method", _per_task(tasks, labels, "w95"),
                        "## Default s of every method", _per_task(tasks, labels, "default_score"),
                        _one_shot(tasks, labels)])


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standard", type=Path, required=True, help="folder of the standard suite's ledger")
    parser.add_argument("--smes-alpha", type=Path, help="folder of the SMES exponent sweep's ledger")
    parser.add_argument("--gala-range", type=Path, help="folder of the GALA wide-lr sweep's ledger")
    args = parser.parse_args(argv)
    for folder in filter(None, (args.standard, args.smes_alpha, args.gala_range)):
        if not (folder / "ledger.sqlite").is_file():
            parser.error(f"{folder}: no ledger.sqlite there (pass the --out folder of a tunefree bench run)")
    standard = _constant(summarise(args.standard))
    sections = [momo_section(standard)]
    sections.append(smes_section(_constant(summarise(args.smes_alpha))) if args.smes_alpha else smes_section(standard))
    sections += [agd_section(standard), rsgdm_section(standard)]
    if args.gala_range:
        sections.append(gala_range_section(_constant(summarise(args.gala_range))))
    sections += [equal_compute_section(standard), peers_section(standard)]
    sys.stdout.write("\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
