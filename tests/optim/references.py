"""Plain per-tensor reference implementations, written straight from the papers' algorithms (not from tunefree's code).

They are the ground truth of the test suite (as torch's own optimizer tests treat the simple for-loop):
no foreach ops, no shared core, Python floats for the scalars where the spec allows. Each reference takes
param groups (``[{"params": [...], "lr": ...}, ...]``) and reads ``p.grad``; ``step(loss)`` takes the
mini-batch loss as a float (methods that do not need it ignore it).
"""

from __future__ import annotations

from typing import Any

import torch


class Reference:
    """Shared bookkeeping of the reference loops: param groups with defaults filled in."""

    def __init__(self, groups: list[dict[str, Any]], **defaults: Any) -> None:
        self.groups = [{**defaults, **group} for group in groups]
        self.state: dict[int, dict[str, Any]] = {}

    def step(self, closure) -> float:
        with torch.enable_grad():
            loss = float(closure().detach())
        self.update(loss)
        return loss

    def update(self, loss: float) -> None:
        raise NotImplementedError

    def params(self):
        for group in self.groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield group, p


def polyak_step_sizes(ref, P: float, N: float, rho: float) -> list[float]:
    """MoMo update (the authors' `Momo`) steps 6-10 (shared by MoMo and MoMo-Adam): the reset rule, the
    truncated Polyak step capped by lr/rho, and the lower-bound update, group by group in order; returns
    one tau per group."""
    taus = []
    for group in ref.groups:
        lr, wd = group["lr"], group["weight_decay"]
        c = 1 + lr * wd
        if ref.use_fstar:
            cap = c * ref.fbar + P - c * ref.gamma
            if cap < c * rho * ref.lb:
                ref.lb = max(cap / (2 * c * rho), ref.lb_init)
        num = c * (ref.fbar - rho * ref.lb) + P - c * ref.gamma
        t1 = max(num, 0.0) / N if N > 1e-30 else 0.0
        tau = min(lr / rho, t1)
        if ref.use_fstar:
            h = ref.fbar + P - ref.gamma
            ref.lb = max((h - 0.5 * tau * N) / rho, ref.lb_init)
        taus.append(tau)
    return taus


class MoMoReference(Reference):
    """MoMo update (the authors' `Momo`), steps 1-11, with the optax zero-norm guard and skipping of
    grad-less params."""

    def __init__(self, groups, lr=1.0, beta=0.9, weight_decay=0.0, lower_bound=0.0,
                 estimate_lower_bound=False, bias_correction=False):
        super().__init__(groups, lr=lr, weight_decay=weight_decay)
        self.beta, self.lb_init, self.use_fstar, self.bc = beta, lower_bound, estimate_lower_bound, bias_correction
        self.k = 0
        self.lb = lower_bound

    @torch.no_grad()
    def update(self, loss: float) -> None:
        beta = self.beta
        self.k += 1
        k = self.k
        grad_dot_x = 0.0
        for group, p in self.params():
            state = self.state.setdefault(id(p), {})
            if "d" not in state:
                state["d"] = torch.zeros_like(p) if self.bc else p.grad.clone()
            grad_dot_x += float((p.grad * p).sum())
        if k == 1:
            self.fbar = 0.0 if self.bc else loss
            self.gamma = 0.0 if self.bc else grad_dot_x
        self.fbar = beta * self.fbar + (1 - beta) * loss
        self.gamma = beta * self.gamma + (1 - beta) * grad_dot_x
        P = N = 0.0
        for group, p in self.params():
            d = self.state[id(p)]["d"]
            d.mul_(beta).add_((1 - beta) * p.grad)
            P += float((d * p).sum())
            N += float((d * d).sum())
        rho = 1 - beta**k if self.bc else 1.0
        taus = polyak_step_sizes(self, P, N, rho)
        for group, tau in zip(self.groups, taus):
            c = 1 + group["lr"] * group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.sub_(tau * self.state[id(p)]["d"]).div_(c)
        self.tau = taus[0]


class MoMoAdamReference(Reference):
    """MoMo-Adam update (the authors' `MomoAdam`), steps 1-8."""

    def __init__(self, groups, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, lower_bound=0.0,
                 estimate_lower_bound=False, decoupled_weight_decay=False):
        super().__init__(groups, lr=lr, weight_decay=weight_decay)
        self.betas, self.eps, self.lb_init = betas, eps, lower_bound
        self.use_fstar, self.decoupled = estimate_lower_bound, decoupled_weight_decay
        self.k, self.lb, self.fbar, self.gamma = 0, lower_bound, 0.0, 0.0

    @torch.no_grad()
    def update(self, loss: float) -> None:
        b1, b2 = self.betas
        self.k += 1
        k = self.k
        grad_dot_x = P = N = 0.0
        directions = {}
        for group, p in self.params():
            state = self.state.setdefault(id(p), {"m": torch.zeros_like(p), "v": torch.zeros_like(p)})
            g = p.grad
            grad_dot_x += float((g * p).sum())
            state["m"].mul_(b1).add_((1 - b1) * g)
            state["v"].mul_(b2).add_((1 - b2) * g * g)
            D = (state["v"] / (1 - b2**k)).sqrt() + self.eps
            directions[id(p)] = state["m"] / D
            P += float((state["m"] * p).sum())
            N += float((state["m"] * state["m"] / D).sum())
        self.fbar = b1 * self.fbar + (1 - b1) * loss
        self.gamma = b1 * self.gamma + (1 - b1) * grad_dot_x
        taus = polyak_step_sizes(self, P, N, 1 - b1**k)
        for group, tau in zip(self.groups, taus):
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if self.decoupled:
                    p.mul_(1 - lr * wd).sub_(tau * directions[id(p)])
                else:
                    p.sub_(tau * directions[id(p)]).div_(1 + lr * wd)
        self.tau = taus[0]

