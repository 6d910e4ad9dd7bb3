"""Step-time benchmark of tunefree's optimizers against torch's, side by side in one process.

Parameter sets: ``resnet18`` (~11.7M, the conv/bn/fc tensor shapes of ResNet-18) and ``transformer``
(~24M: token/position embeddings, attention and MLP matrices, biases, layer norms), float32, random
gradients fixed per set. Optimizers are timed interleaved (round-robin, several repeats) so that the noise
of a shared machine hits all of them alike; the reported time is the median over all timed steps.

Effective bandwidth = bytes the ideal (fused, single-pass) algorithm must move per step / median time,
compared to this machine's copy bandwidth (``dst.copy_(src)`` on a large tensor, read + write counted).

On a GPU (``--device cuda``) each timed sample is a run of ``--steps`` consecutive steps between two device
synchronisations, divided by the number of steps: kernel launches overlap execution as they do in a
training loop, and the host never waits inside the run.

    python benchmarks/step_time.py --out results/step_time          # writes .json and .md
    python benchmarks/step_time.py --device cuda --repeats 10 --steps 20 --out results/step_time_cuda
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import torch

import tunefree

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


# ideal bytes per parameter element (fp32): reads + writes of param, grad and state buffers
IDEAL_ACCESSES = {"sgd": 5, "adam": 7, "momo": 5, "smes": 7, "agd": 7, "rsgdm": 7}


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


def optimizer_factories(nonfinite: str) -> dict[str, tuple[str, Callable, bool]]:
    """name -> (ideal-traffic family, factory(params), needs a loss)."""
    tf = dict(nonfinite=nonfinite)
    table: dict[str, tuple[str, Callable, bool]] = {
        "torch SGD-M foreach": ("sgd", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, foreach=True), False),
        "torch SGD-M for-loop": ("sgd", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, foreach=False), False),
        "torch Adam foreach": ("adam", lambda p: torch.optim.Adam(p, foreach=True), False),
        "torch Adam for-loop": ("adam", lambda p: torch.optim.Adam(p, foreach=False), False),
        "torch Adam fused": ("adam", lambda p: torch.optim.Adam(p, fused=True), False),
        "torch AdamW foreach": ("adam", lambda p: torch.optim.AdamW(p, foreach=True), False),
        "tunefree MoMo": ("momo", lambda p: tunefree.MoMo(p, **tf), True),
        "tunefree MoMoAdam": ("adam", lambda p: tunefree.MoMoAdam(p, **tf), True),
        "tunefree SMES a=0.25": ("smes", lambda p: tunefree.SMES(p, alpha=0.25, **tf), False),
        "tunefree SMES a=0.3": ("smes", lambda p: tunefree.SMES(p, alpha=0.3, **tf), False),
        "tunefree AGD": ("agd", lambda p: tunefree.AGD(p, **tf), False),
        "AGD per-param loop (authors' form)": ("agd", lambda p: AGDLoop(p), False),
        "tunefree RSGDM": ("rsgdm", lambda p: tunefree.RSGDM(p, **tf), False),
    }
    try:
        import momo  # momo-opt, the authors' package

        table["momo-opt Momo"] = ("momo", lambda p: momo.Momo(p, lr=1.0), True)
        table["momo-opt MomoAdam"] = ("adam", lambda p: momo.MomoAdam(p, lr=1e-2), True)
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
) -> dict[str, float]:
    generator = torch.Generator().manual_seed(seed)
    grads = [(torch.randn(s, generator=generator) * 1e-2).to(device) for s in shapes]
    runs = {}
    for name, (_, factory, needs_loss) in factories.items():
        params = [torch.nn.Parameter((torch.randn(s, generator=generator) * 0.05).to(device)) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer = factory(params)
        loss = torch.tensor(1.0, device=device)

        def step(optimizer=optimizer, needs_loss=needs_loss) -> None:
            optimizer.step(loss=loss) if needs_loss else optimizer.step()

        for _ in range(warmup):  # state allocation, first-touch of pages
            step()
        runs[name] = (step, [])
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
    return {name: statistics.median(times) for name, (_, times) in runs.items()}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True,
                        help="output path without suffix (.json and .md are written)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="round-robin passes over the optimizers")
    parser.add_argument("--steps", type=int, default=7, help="timed steps per optimizer per pass")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sets", nargs="+", default=["resnet18", "transformer"], choices=["resnet18", "transformer"])
    parser.add_argument("--only", nargs="*", default=None, help="substrings of optimizer names to run")
    parser.add_argument("--nonfinite", default="off", choices=["off", "raise"],
                        help="tunefree NaN/Inf check (off: kernels only, as torch does; raise: +1 grad pass, 1 sync)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"

    factories = optimizer_factories(args.nonfinite)
    if args.only:
        keep = {"torch Adam foreach", "torch SGD-M foreach"}
        factories = {k: v for k, v in factories.items() if k in keep or any(s in k for s in args.only)}
    bandwidth = copy_bandwidth(device)
    results: dict = {"device": where, "threads": args.threads, "copy_bandwidth_GBps": bandwidth / 1e9,
                     "torch": torch.__version__, "nonfinite": args.nonfinite, "sets": {}}
    lines = [f"{where}: copy bandwidth {bandwidth / 1e9:.1f} GB/s, torch {torch.__version__}, "
             f"tunefree nonfinite={args.nonfinite}", ""]
    for set_name in args.sets:
        shapes = resnet18_shapes() if set_name == "resnet18" else transformer_shapes()
        numel = sum(math.prod(s) for s in shapes)
        medians = bench_set(shapes, factories, args.repeats, args.steps, args.warmup, device)
        adam, sgd = medians["torch Adam foreach"], medians["torch SGD-M foreach"]
        rows = {}
        lines += [f"### {set_name}: {numel / 1e6:.1f}M params, {len(shapes)} tensors", "",
                  "| optimizer | ms/step | / Adam foreach | / SGD-M foreach | eff. GB/s | % of copy bw |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, seconds in medians.items():
            ideal_bytes = IDEAL_ACCESSES[factories[name][0]] * 4 * numel
            rows[name] = dict(ms=seconds * 1e3, vs_adam=seconds / adam, vs_sgd=seconds / sgd,
                              eff_GBps=ideal_bytes / seconds / 1e9, frac_copy_bw=ideal_bytes / seconds / bandwidth)
            r = rows[name]
            lines.append(f"| {name} | {r['ms']:.1f} | {r['vs_adam']:.2f} | {r['vs_sgd']:.2f} | "
                         f"{r['eff_GBps']:.1f} | {100 * r['frac_copy_bw']:.0f}% |")
        lines.append("")
        results["sets"][set_name] = dict(numel=numel, tensors=len(shapes), rows=rows)
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
