"""Probe: can ``torch.compile`` give MoMo a fused CPU step? MoMo's two passes written as per-tensor
functions (pass 1: momentum EMA and the three inner products; pass 2: the step), compiled once with
dynamic shapes and called tensor by tensor, against tunefree's eager MoMo (guard off) and a copy of the
same size, interleaved in one process. Prints ms per step and % of copy bandwidth for MoMo's minimal
7 fp32 words per element. The update here is MoMo's arithmetic without the loss model (``tau`` from the
inner products alone): it measures memory traffic, not the method.

    python benchmarks/compiled_passes.py --threads 2 --repeats 15
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from step_time import resnet18_shapes, transformer_shapes

import tunefree


def first_pass(momentum: torch.Tensor, grad: torch.Tensor, param: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    momentum.lerp_(grad, weight)
    return torch.stack([(grad * param).sum(), (momentum * param).sum(), (momentum * momentum).sum()])


def second_pass(param: torch.Tensor, momentum: torch.Tensor, tau: torch.Tensor) -> None:
    param.sub_(tau * momentum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--set", default="resnet18", choices=["resnet18", "transformer"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shapes = resnet18_shapes() if args.set == "resnet18" else transformer_shapes()
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=generator).view(-1) * 1e-2 for s in shapes]
    params = [torch.randn(s, generator=generator).view(-1) * 0.05 for s in shapes]
    momenta = [g.clone() for g in grads]
    numel = sum(g.numel() for g in grads)
    weight = torch.tensor(0.1)
    compiled_first = torch.compile(first_pass, dynamic=True)
    compiled_second = torch.compile(second_pass, dynamic=True)

    def compiled_step() -> None:
        sums = torch.stack([compiled_first(m, g, x, weight) for m, g, x in zip(momenta, grads, params)]).sum(0)
        tau = torch.clamp(sums[1] / sums[2], max=1e-9)
        for x, m in zip(params, momenta):
            compiled_second(x, m, tau)

    start = time.perf_counter()
    with torch.no_grad():
        compiled_step()
    warmup = time.perf_counter() - start

    eager_params = [torch.nn.Parameter(x.clone()) for x in params]
    for p, g in zip(eager_params, grads):
        p.grad = g.clone()
    eager = tunefree.MoMo(eager_params, nonfinite="off")
    loss = torch.tensor(1.0)
    eager.step(loss=loss)
    src, dst = torch.randn(numel), torch.empty(numel)
    runs = {
        "compiled per-tensor passes": compiled_step,
        "tunefree MoMo (eager, guard off)": lambda: eager.step(loss=loss),
        "copy": lambda: dst.copy_(src),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    bandwidth = 8 * numel / medians["copy"]
    print(f"{args.set}: {numel / 1e6:.1f}M params, {args.threads} threads, compile warm-up {warmup:.1f} s, "
          f"copy bandwidth {bandwidth / 1e9:.1f} GB/s")
    for name in runs:
        if name != "copy":
            share = 7 * 4 * numel / medians[name] / bandwidth
            print(f"{name}: {medians[name] * 1e3:.2f} ms, {100 * share:.0f}% of copy bw")


if __name__ == "__main__":
    main()
