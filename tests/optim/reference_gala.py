"""Plain reference loop of GALA, written from the update rule in GALA's module docstring (not from its code).

Per-tensor torch ops, Python floats for every global scalar, the stored previous parameters and the
previous direction kept as explicit copies (no buffer tricks), the extra closure call done naively.
"""

from __future__ import annotations

import math

import torch

from .references import Reference


class GALAReference(Reference):
    """The closure form with: eta used at step t includes the feedback measured at x_t; decoupled weight decay;
    group k steps with eta * lr_k / lr_0; Adam bias corrections from the global step counter.

    ``alignment="same_batch"`` (SGD base only): reading A in the closure form,
    ``a = sum_k ratio_k <g_t, ghat_t>``; ``L`` and ``b = L ||u_(t-1)||^2`` as in the closure form (``u`` = the momentum
    buffer, which is ``g_(t-1)`` for momentum 0, so that reading A's ``||g_(t-1)||^2`` is recovered).

    ``alignment="start"``: ``a = <ghat_t, u_(t-1)>``, the gradient at the start ``x_(t-1)`` of the step just
    taken (on the current batch). ``surrogate="normalised"``: each step adds ``a / ||u_(t-1)||^2`` to ``A``
    and ``L`` to ``B`` (nothing when ``u_(t-1) = 0``). ``curvature="rayleigh"``:
    ``L = <g_t - ghat_t, dx> / ||dx||^2`` where that is > 0, else ``||g_t - ghat_t|| / ||dx||``.
    ``lr_growth``: ``eta_t <= lr_growth * eta_(t-1)`` unless ``eta_(t-1) = 0``."""

    def __init__(self, groups, lr=0.1, base="sgd", momentum=0.9, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0, delta=0.0, lr_min=0.0, lr_max=math.inf, alignment=None,
                 surrogate="sum", curvature=None, lr_growth=None):
        super().__init__(groups, lr=lr, momentum=momentum, betas=betas, eps=eps, weight_decay=weight_decay)
        self.base, self.delta, self.lr_min, self.lr_max = base, delta, lr_min, lr_max
        sgd = base == "sgd"  # per-base defaults
        self.alignment = alignment or ("start" if sgd else "direction")
        self.curvature = curvature or ("rayleigh" if sgd else "norm")
        self.surrogate = surrogate
        self.lr_growth = lr_growth if lr_growth is not None else (1.5 if sgd else math.inf)
        self.t = 0
        self.A = self.B = 0.0
        self.eta = None
        self.L_last = 0.0  # the curvature of the last step that moved: reused when a step did not move
        self.x_prev: dict[int, torch.Tensor] = {}
        self.u_prev: dict[int, torch.Tensor] = {}  # the direction of the last step, per unit of eta

    def step(self, closure) -> float:
        with torch.enable_grad():
            loss = float(closure().detach())
        self.t += 1
        eta0 = self.groups[0]["lr"]
        active = list(self.params())
        if self.eta is None:
            self.eta = min(max(eta0, self.lr_min), self.lr_max)
        for group, p in active:
            if id(p) not in self.x_prev:  # first time with a gradient: not moved yet, no direction yet
                self.x_prev[id(p)] = p.detach().clone()
                self.u_prev[id(p)] = torch.zeros_like(p)
        if self.t >= 2:
            all_params = [p for group in self.groups for p in group["params"]]
            x_now = {id(p): p.detach().clone() for p in all_params}
            g_now = {id(p): None if p.grad is None else p.grad.clone() for p in all_params}
            with torch.no_grad():
                for p in all_params:
                    if id(p) in self.x_prev:
                        p.copy_(self.x_prev[id(p)])
            with torch.enable_grad():
                closure()
            ghat = {id(p): None if p.grad is None else p.grad.clone() for p in all_params}
            with torch.no_grad():
                for p in all_params:
                    p.copy_(x_now[id(p)])
                    p.grad = g_now[id(p)]
            a = diff_sq = dx_sq = u_sq = secant = 0.0
            for group, p in active:
                g = p.grad
                gh = ghat[id(p)] if ghat[id(p)] is not None else torch.zeros_like(p)
                u = self.u_prev[id(p)]
                if self.alignment == "same_batch":
                    a += float((group["lr"] / eta0 * g * gh).sum())
                elif self.alignment == "start":
                    a += float((gh * u).sum())
                else:
                    a += float((g * u).sum())
                dx = p.detach() - self.x_prev[id(p)]
                diff_sq += float(((g - gh) ** 2).sum())
                dx_sq += float((dx * dx).sum())
                secant += float(((g - gh) * dx).sum())
                u_sq += float((u * u).sum())
            if dx_sq == 0:
                L = self.L_last
            elif self.curvature == "rayleigh" and secant > 0:
                L = secant / dx_sq
            else:
                L = math.sqrt(diff_sq) / math.sqrt(dx_sq)
            b = L * u_sq
            if self.surrogate == "normalised":
                a, b = (a / u_sq, L) if u_sq > 0 else (0.0, 0.0)
            finite = math.isfinite(a) and math.isfinite(b) and math.isfinite(diff_sq)
            if finite:
                self.A += a
                self.B += b
                if dx_sq > 0:
                    self.L_last = L
            den = self.delta + self.B
            if finite and den > 0:  # a dropped feedback leaves eta as it was
                new = min(max((self.delta * eta0 + self.A) / den, self.lr_min), self.lr_max)
                self.eta = min(new, self.lr_growth * self.eta) if self.eta > 0 else new
            self.L, self.a = L, a
        for p in [p for group in self.groups for p in group["params"]]:
            if id(p) in self.x_prev:
                self.x_prev[id(p)] = p.detach().clone()
        self._base_step(active, eta0)
        return loss

    @torch.no_grad()
    def _base_step(self, active, eta0) -> None:
        t = self.t
        for group, p in active:
            ratio = group["lr"] / eta0
            lr = self.eta * ratio
            g = p.grad
            state = self.state.setdefault(id(p), {})
            if self.base == "sgd":
                buf = state.get("buf")
                state["buf"] = g.clone() if buf is None else group["momentum"] * buf + g
                u = state["buf"]
            else:
                b1, b2 = group["betas"]
                m = state.get("m", torch.zeros_like(p))
                v = state.get("v", torch.zeros_like(p))
                state["m"] = b1 * m + (1 - b1) * g
                state["v"] = b2 * v + (1 - b2) * g * g
                mhat = state["m"] / (1 - b1**t)
                vhat = state["v"] / (1 - b2**t)
                u = mhat / (vhat.sqrt() + group["eps"])
            p.mul_(1 - lr * group["weight_decay"])
            p.sub_(lr * u)
            # the direction per unit of GALA's eta: this group moved by eta * ratio * u
            self.u_prev[id(p)] = ratio * u
