"""Plain per-tensor references of SMES, AGD and RSGDM, written from the papers' update rules (not from tunefree's code).

Straight transcriptions of the specs' step lists: one tensor at a time, Python-float scalars computed in
float64 from Python-int step counters, no foreach ops and nothing from tunefree.
"""

from __future__ import annotations

import math

import torch

from .references import Reference


def _alpha_value(alpha, k: int) -> float:
    """The exponent at step k of a float or a schedule (tuple/dict/callable), written out independently."""
    if callable(alpha):
        return float(alpha(k))
    if isinstance(alpha, dict):
        alpha = (alpha["kind"], alpha["start"], alpha["end"], alpha["steps"])
    if isinstance(alpha, tuple):
        kind, start, end, steps = alpha
        frac = min(k, steps) / steps
        if kind == "linear":
            return start + (end - start) * frac
        if kind == "cosine":
            return end + (start - end) * (1 + math.cos(math.pi * frac)) / 2
        return start
    return float(alpha)


class SMESReference(Reference):
    """SMES update steps 1-5 (and the Padam-compatible variant for padam_compat)."""

    def __init__(self, groups, lr=1e-3, alpha=0.25, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, allow_any_alpha=False, padam_compat=False):
        super().__init__(groups, lr=lr, weight_decay=weight_decay)
        self.alpha, self.betas, self.eps = alpha, betas, eps
        self.decoupled, self.padam = decoupled_weight_decay, padam_compat
        self.k = 0  # step() calls: the schedule position

    @torch.no_grad()
    def update(self, loss: float) -> None:
        b1, b2 = self.betas
        self.k += 1
        a = _alpha_value(self.alpha, self.k)
        self.last_alpha = a
        for group, p in self.params():
            lr, wd = group["lr"], group["weight_decay"]
            state = self.state.setdefault(id(p), {"t": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)})
            state["t"] += 1
            t = state["t"]
            g = p.grad
            if self.decoupled:
                p.mul_(1 - lr * wd)
            else:
                g = g + wd * p
            state["m"] = b1 * state["m"] + (1 - b1) * g
            state["v"] = b2 * state["v"] + (1 - b2) * g * g
            if self.padam:
                step = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
                den = (state["v"].sqrt() + self.eps) ** (2 * a)
                p.sub_(step * state["m"] / den)
                continue
            mhat = state["m"] / (1 - b1**t)
            vhat = state["v"] / (1 - b2**t)
            if a == 0:
                powered = torch.ones_like(vhat)
            else:
                positive = vhat > 0
                powered = torch.where(positive, torch.exp(a * torch.log(torch.where(positive, vhat, 1.0))),
                                      torch.zeros_like(vhat))
            p.sub_(lr * mhat / (powered + self.eps))


class AGDReference(Reference):
    """AGD update steps 1-7, with the two-moment definition of s_t (a copy of m_{t-1}), as the code has it."""

    def __init__(self, groups, lr=1e-3, betas=(0.9, 0.999), delta=1e-5, weight_decay=0.0,
                 decoupled_weight_decay=True, fixed_decay=False, amsgrad=False, clip=None):
        super().__init__(groups, lr=lr, weight_decay=weight_decay)
        self.betas, self.delta = betas, delta
        self.decouple, self.fixed, self.amsgrad, self.clip = decoupled_weight_decay, fixed_decay, amsgrad, clip
        self.frac_sgd_like = 0.0

    @torch.no_grad()
    def update(self, loss: float) -> None:
        b1, b2 = self.betas
        sgd_like = total = 0
        for group, p in self.params():
            lr, wd = group["lr"], group["weight_decay"]
            state = self.state.setdefault(id(p), {"t": 0, "m": torch.zeros_like(p), "b": torch.zeros_like(p),
                                                  "bmax": torch.zeros_like(p)})
            g = p.grad
            # 1. weight decay first
            if self.decouple:
                p.mul_(1 - (wd if self.fixed else lr * wd))
            else:
                g = g + wd * p
            # 2.
            state["t"] += 1
            t = state["t"]
            m_prev = state["m"].clone()
            state["m"] = b1 * state["m"] + (1 - b1) * g
            # 3. s_t = mhat_t - mhat_{t-1}
            if t == 1:
                s = state["m"] / (1 - b1)
            else:
                s = state["m"] / (1 - b1**t) - m_prev / (1 - b1 ** (t - 1))
            # 4.
            state["b"] = b2 * state["b"] + (1 - b2) * s * s
            b = state["b"]
            if self.amsgrad:
                state["bmax"] = torch.maximum(state["bmax"], state["b"])
                b = state["bmax"]
            # 5.-7.
            threshold = self.delta * math.sqrt(1 - b2**t)
            den = torch.clamp(b.sqrt(), min=threshold)
            sgd_like += int((b.sqrt() <= threshold).sum())
            total += p.numel()
            r = state["m"] / den
            if self.clip is not None:
                r = r.clamp(-self.clip, self.clip)
            p.sub_(lr * math.sqrt(1 - b2**t) / (1 - b1**t) * r)
        self.frac_sgd_like = sgd_like / max(total, 1)


class RSGDMReference(Reference):
    """RSGDM update steps 1-7 in the naive three-buffer form (m, z, g_prev)."""

    def __init__(self, groups, lr=1.0, beta=0.9, weight_decay=0.0, first_step="zero_diff", correction=True):
        super().__init__(groups, lr=lr, weight_decay=weight_decay)
        self.beta, self.first_step, self.correction = beta, first_step, correction

    @torch.no_grad()
    def update(self, loss: float) -> None:
        beta = self.beta
        for group, p in self.params():
            lr, wd = group["lr"], group["weight_decay"]
            g = p.grad + wd * p
            if id(p) not in self.state:
                g_prev = g.clone() if self.first_step == "zero_diff" else torch.zeros_like(p)
                self.state[id(p)] = {"m": torch.zeros_like(p), "z": torch.zeros_like(p), "g_prev": g_prev}
            state = self.state[id(p)]
            dg = g - state["g_prev"]
            state["m"] = beta * state["m"] + (1 - beta) * g
            state["z"] = beta * state["z"] + (1 - beta) * dg
            n = state["m"] + beta * state["z"] if self.correction else state["m"]
            p.sub_(lr * n)
            state["g_prev"] = g.clone()
