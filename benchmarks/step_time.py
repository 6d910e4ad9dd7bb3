"""Step-time benchmark of tunefree's optimizers against torch's, side by side in one process.

Every tunefree optimizer runs at its default settings three times: with the default NaN/Inf guard
(``nonfinite="raise"``), with it off (``nonfinite="off"``, as torch's optimizers), so the guard's
overhead is read off side by side, and with the native CPU kernels turned off (``[foreach]``: what a
machine without a C compiler runs). ``--compiled`` adds ``torch.compile`` of each tunefree step (the
compiled route to a fused step; its warm-up is timed and reported).

Parameter sets: ``resnet18`` (~11.7M, the conv/bn/fc tensor shapes of ResNet-18) and ``transformer``
(~24M: token/position embeddings, attention and MLP matrices, biases, layer norms), float32, random
gradients fixed per set. Optimizers are timed interleaved (round-robin, several repeats) so that the noise
of a shared machine hits all of them alike; the reported time is the median over all timed steps.

Effective bandwidth = the bytes a method must move per step at least (``MIN_ACCESSES``: fp32 words read
plus written per parameter element by a fused kernel, two passes for the MoMo family whose step size
needs a global reduction first) / median time, compared to the copy bandwidth
(``dst.copy_(src)`` of a tensor as large as the parameter set, read + write counted, timed in the same round
robin as the optimizers).

On a GPU (``--device cuda``) each timed sample is a run of ``--steps`` consecutive steps between two device
synchronisations, divided by the number of steps: kernel launches overlap execution as they do in a
training loop, and the host never waits inside the run.

    python benchmarks/step_time.py --out docs/results/step-time/cpu    # writes .json and .md
    python benchmarks/step_time.py --device cuda --repeats 10 --steps 20 --out results/step_time_cuda
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

import tunefree
from tunefree.optim import native

Shapes = list[tuple[int, ...]]


def resnet18_shapes() -> Shapes:
    shapes: Shapes = [(64, 3, 7, 7), (64,), (64,)]
    in_ch = 64
    for out_ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            first_in = in_ch if block == 0 else out_ch
            shapes += [(out_ch, first_in, 3, 3), (out_ch,), (out_ch,), (out_ch, out_ch, 3, 3), (out_ch,), (out_ch,)]
            if block == 0 and (stride != 1 or in_ch != out_ch):
                shapes += [(out_ch, in_ch, 1, 1), (out_ch,), (out_ch,)]
        in_ch = out_ch
    return shapes + [(1000, 512), (1000,)]


def transformer_shapes(vocab: int = 8192, width: int = 512, layers: int = 6, context: int = 1024) -> Shapes:
    shapes: Shapes = [(vocab, width), (context, width)]
    for _ in range(layers):
        shapes += [(width,), (width,), (3 * width, width), (3 * width,), (width, width), (width,),
                   (width,), (width,), (4 * width, width), (4 * width,), (width, 4 * width), (width,)]
    return shapes + [(width,), (width,)]


# Minimal fp32 words moved per parameter element (reads + writes of param, grad and state buffers):
# SGD-M reads g, x, b and writes x, b; Adam, SMES, AGD and RSGDM read g, x and two buffers and write x and
# the buffers. MoMo needs two passes (the step size depends on global inner products): read g, x, m, write
# m; then read m, x, write x. MoMo-Adam: read g, x, m, v, write m, v; then read m, v, x, write x.
MIN_ACCESSES = {"sgd": 5, "adam": 7, "momo": 7, "momo-adam": 11, "smes": 7, "agd": 7, "rsgdm": 7}

#: the torch reference each tunefree method's step time is held against, and the acceptance bound
TARGETS = {
    "MoMo": ("torch SGD-M foreach", 1.5), "MoMoAdam": ("torch Adam foreach", 1.2),
    "SMES": ("torch Adam foreach", 1.0), "AGD": ("torch Adam foreach", 1.0), "RSGDM": ("torch SGD-M foreach", 1.5),
}
#: acceptance bound on the guard's cost (default step / guard-off step - 1)
GUARD_BOUND = 0.10
COPY = "memory copy of the same size"
TUNEFREE = {"MoMo": "momo", "MoMoAdam": "momo-adam", "SMES": "smes", "AGD": "agd", "RSGDM": "rsgdm"}


class AGDLoop(torch.optim.Optimizer):
    """AGD as the authors' code does it: a per-parameter loop with a copy of the previous moment."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), delta=1e-5) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, delta=delta))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"], state["exp_avg"], state["exp_avg_sq"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                bc1_old = 1 - beta1 ** (t - 1)
                bc1, bc2 = 1 - beta1**t, 1 - beta2**t
                exp_avg_old = exp_avg.detach().clone()
                exp_avg.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                update = exp_avg * (1 / bc1) - exp_avg_old * (1 / bc1_old) if t > 1 else exp_avg * (1 / bc1)
                exp_avg_sq.mul_(beta2).addcmul_(update, update, value=1 - beta2)
                denom = exp_avg_sq.sqrt().clamp_(min=group["delta"] * math.sqrt(bc2))
                p.addcdiv_(exp_avg, denom, value=-group["lr"] * math.sqrt(bc2) / bc1)


class ForeachOnly:
    """A tunefree optimizer whose steps run without the native CPU kernels (the foreach path, guard
    included), as on a machine without a C compiler or with ``TUNEFREE_NATIVE=0``."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def step(self, *args, **kwargs):
        saved, native.ENABLED = native.ENABLED, False
        try:
            return self.optimizer.step(*args, **kwargs)
        finally:
            native.ENABLED = saved


def optimizer_factories(compiled: bool = False) -> dict[str, tuple[str, Callable, bool]]:
    """name -> (minimal-traffic family, factory(params), needs a loss)."""
    table: dict[str, tuple[str, Callable, bool]] = {
        "torch SGD-M foreach": ("sgd", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, foreach=True), False),
        "torch SGD-M for-loop": ("sgd", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, foreach=False), False),
        "torch Adam foreach": ("adam", lambda p: torch.optim.Adam(p, foreach=True), False),
        "torch Adam for-loop": ("adam", lambda p: torch.optim.Adam(p, foreach=False), False),
        "torch Adam fused": ("adam", lambda p: torch.optim.Adam(p, fused=True), False),
        "torch AdamW fused": ("adam", lambda p: torch.optim.AdamW(p, fused=True), False),
    }
    for name, family in TUNEFREE.items():
        cls = getattr(tunefree, name)
        needs_loss = bool(cls.needs_loss)
        table[f"tunefree {name}"] = (family, lambda p, cls=cls: cls(p), needs_loss)
        table[f"tunefree {name} [guard off]"] = (family, lambda p, cls=cls: cls(p, nonfinite="off"), needs_loss)
        table[f"tunefree {name} [foreach]"] = (family, lambda p, cls=cls: ForeachOnly(cls(p)), needs_loss)
        if compiled:
            table[f"tunefree {name} [compiled]"] = (family, lambda p, cls=cls: cls(p, nonfinite="off"), needs_loss)
    table["AGD per-param loop (authors' form)"] = ("agd", lambda p: AGDLoop(p), False)
    try:
        import momo  # momo-opt, the authors' package

        table["momo-opt Momo"] = ("momo", lambda p: momo.Momo(p, lr=1.0), True)
        table["momo-opt MomoAdam"] = ("momo-adam", lambda p: momo.MomoAdam(p, lr=1e-2), True)
    except ImportError:
        pass
    return table


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, numel: int = 1 << 26, repeats: int = 15) -> float:
    """Bytes per second of ``dst.copy_(src)`` (read + write) on a tensor far larger than the caches."""
    src, dst = torch.randn(numel, device=device), torch.empty(numel, device=device)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * 4 * numel / statistics.median(times)


def bench_set(
    shapes: Shapes, factories: dict, repeats: int, steps: int, warmup: int, device: torch.device, seed: int = 0
) -> tuple[dict[str, float], dict[str, float]]:
    """(median seconds per step, warm-up seconds of the compiled entries) per optimizer name."""
    generator = torch.Generator().manual_seed(seed)
    grads = [(torch.randn(s, generator=generator) * 1e-2).to(device) for s in shapes]
    runs, warmups = {}, {}
    for name, (_, factory, needs_loss) in factories.items():
        params = [torch.nn.Parameter((torch.randn(s, generator=generator) * 0.05).to(device)) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer = factory(params)
        loss = torch.tensor(1.0, device=device)
        call = optimizer.step
        if name.endswith("[compiled]"):
            call(loss=loss) if needs_loss else call()  # state is created eagerly, then the step compiles
            call = torch.compile(optimizer.step)

        def step(call=call, needs_loss=needs_loss) -> None:
            call(loss=loss) if needs_loss else call()

        start = time.perf_counter()
        for _ in range(warmup):  # state allocation, first-touch of pages, compilation
            step()
        synchronize(device)
        if name.endswith("[compiled]"):
            warmups[name] = time.perf_counter() - start
        runs[name] = (step, [])
    # The copy that the bandwidth figures are relative to runs in the same round robin (same noise).
    numel = sum(math.prod(s) for s in shapes)
    src, dst = torch.randn(numel, generator=generator).to(device), torch.empty(numel, device=device)
    dst.copy_(src)
    runs[COPY] = (lambda: dst.copy_(src), [])
    for _ in range(repeats):
        for name, (step, times) in runs.items():
            if device.type == "cpu":
                for _ in range(steps):
                    start = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - start)
            else:
                synchronize(device)
                start = time.perf_counter()
                for _ in range(steps):
                    step()
                synchronize(device)
                times.append((time.perf_counter() - start) / steps)
    return {name: statistics.median(times) for name, (_, times) in runs.items()}, warmups


def acceptance(medians: dict[str, float]) -> list[dict]:
    """The acceptance checks of one parameter set: guard overhead and the ratio to a torch reference."""
    checks = []
    for name in TUNEFREE:
        default, off = medians.get(f"tunefree {name}"), medians.get(f"tunefree {name} [guard off]")
        if default is not None and off is not None:
            overhead = default / off - 1.0
            text = f"{100 * overhead:+.0f}% (<= +{100 * GUARD_BOUND:.0f}%)"
            checks.append(dict(check=f"{name}: guard overhead", value=overhead, bound=GUARD_BOUND,
                               met=overhead <= GUARD_BOUND, text=text))
        reference, bound = TARGETS[name]
        if default is not None and reference in medians:
            ratio = default / medians[reference]
            checks.append(dict(check=f"{name} (default) / {reference}", value=ratio, bound=bound,
                               met=ratio <= bound, text=f"{ratio:.2f}x (<= {bound}x)"))
    return checks


def readme_table(results: dict) -> str:
    """The README's performance table, rendered from a results JSON of this script (``--readme``)."""
    sets = [name for name in ("resnet18", "transformer") if name in results["sets"]]
    labels = {"resnet18": "ResNet-18-like", "transformer": "transformer-like"}
    header = "| optimizer (default settings) | " + " | ".join(f"{labels[n]}: ms/step" for n in sets) + \
        " | vs | guard |"
    lines = [f"<!-- generated by `python benchmarks/step_time.py --readme {results['json_path']}` -->",
             header, "|---|" + "---:|" * len(sets) + "---|---:|"]
    torch_rows = ["torch SGD-M foreach", "torch Adam foreach", "torch Adam fused"]
    for name in torch_rows + [f"tunefree {method}" for method in TUNEFREE]:
        rows = [results["sets"][n]["rows"].get(name) for n in sets]
        if any(r is None for r in rows):
            continue
        times = " | ".join(f"{r['ms']:.1f}" for r in rows)
        method = name.removeprefix("tunefree ")
        if method in TARGETS:
            reference = TARGETS[method][0]
            key = "vs_sgd" if "SGD-M" in reference else "vs_adam"
            ratios = " / ".join(f"{r[key]:.2f}x" for r in rows)
            guards = " / ".join(f"{100 * r['guard_overhead']:+.0f}%" for r in rows)
            lines.append(f"| {method} | {times} | {ratios} {reference.removeprefix('torch ')} | {guards} |")
        else:
            lines.append(f"| {name} | {times} | | |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help="output path without suffix (.json and .md are written; required unless --readme)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="round-robin passes over the optimizers")
    parser.add_argument("--steps", type=int, default=7, help="timed steps per optimizer per pass")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sets", nargs="+", default=["resnet18", "transformer"], choices=["resnet18", "transformer"])
    parser.add_argument("--only", nargs="*", default=None, help="substrings of optimizer names to run")
    parser.add_argument("--readme", type=Path, default=None, metavar="JSON",
                        help="only print the README's performance table from a results JSON, and exit")
    parser.add_argument("--compiled", action="store_true",
                        help="also time torch.compile of each tunefree step (guard off; minutes of warm-up on CPU)")
    args = parser.parse_args(argv)
    if args.readme is not None:
        results = json.loads(args.readme.read_text())
        print(readme_table({**results, "json_path": args.readme.as_posix()}))
        return
    if args.out is None:
        parser.error("--out is required (or --readme JSON)")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"

    factories = optimizer_factories(args.compiled)
    if args.only:
        keep = {"torch Adam foreach", "torch SGD-M foreach"}
        factories = {k: v for k, v in factories.items() if k in keep or any(s in k for s in args.only)}
    bandwidth = copy_bandwidth(device)
    command = "python benchmarks/step_time.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict = {"device": where, "threads": args.threads, "copy_bandwidth_GBps": bandwidth / 1e9,
                     "torch": torch.__version__, "command": command, "sets": {}}
    lines = [f"{where}: copy bandwidth {bandwidth / 1e9:.1f} GB/s (256 MiB), torch {torch.__version__}, "
             f"median of {args.repeats} x {args.steps} interleaved steps.", "", f"`{command}`", "",
             "tunefree rows are at default settings; `[guard off]` is `nonfinite=\"off\"`; guard = the default "
             "row's time over the guard-off row's, minus 1; `[foreach]` is the default without the native CPU "
             "kernels (no C compiler, or `TUNEFREE_NATIVE=0`): the foreach path and its sum-based guard. "
             "Words: fp32 reads + writes per element the method "
             "needs at least; % of copy bw = those bytes / time / copy bandwidth.", ""]
    for set_name in args.sets:
        shapes = resnet18_shapes() if set_name == "resnet18" else transformer_shapes()
        numel = sum(math.prod(s) for s in shapes)
        medians, warmups = bench_set(shapes, factories, args.repeats, args.steps, args.warmup, device)
        set_bandwidth = 2 * 4 * numel / medians.pop(COPY)
        adam, sgd = medians["torch Adam foreach"], medians["torch SGD-M foreach"]
        rows = {}
        lines += [f"### {set_name}: {numel / 1e6:.1f}M params, {len(shapes)} tensors", "",
                  f"Copy bandwidth in the same round robin: {set_bandwidth / 1e9:.1f} GB/s.", "",
                  "| optimizer | ms/step | / Adam foreach | / SGD-M foreach | guard | words | % of copy bw |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, seconds in medians.items():
            words = MIN_ACCESSES[factories[name][0]]
            off = medians.get(f"{name} [guard off]")
            rows[name] = dict(ms=seconds * 1e3, vs_adam=seconds / adam, vs_sgd=seconds / sgd, words=words,
                              frac_copy_bw=words * 4 * numel / seconds / set_bandwidth,
                              guard_overhead=None if off is None else seconds / off - 1.0)
            if name in warmups:
                rows[name]["warmup_s"] = warmups[name]
            r = rows[name]
            guard = "" if r["guard_overhead"] is None else f"{100 * r['guard_overhead']:+.0f}%"
            label = name + (f" (warm-up {warmups[name]:.0f} s)" if name in warmups else "")
            lines.append(f"| {label} | {r['ms']:.1f} | {r['vs_adam']:.2f} | {r['vs_sgd']:.2f} | {guard} | "
                         f"{words} | {100 * r['frac_copy_bw']:.0f}% |")
        checks = acceptance(medians)
        lines += ["", "| acceptance check | measured | met |", "|---|---:|:---:|"]
        lines += [f"| {c['check']} | {c['text']} | {'yes' if c['met'] else '**no**'} |" for c in checks]
        lines.append("")
        results["sets"][set_name] = dict(numel=numel, tensors=len(shapes), copy_bandwidth_GBps=set_bandwidth / 1e9,
                                         rows=rows, acceptance=checks)
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
