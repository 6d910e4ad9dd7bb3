"""Native CPU kernels: each method's passes as fused C loops, and the NaN/Inf check at read bandwidth.

The foreach path runs one torch op per line of the math, and each op is a pass over memory; these kernels
(``native_kernels.c``) make one pass per pass the method needs (one for SMES, AGD and RSGDM, two for MoMo
and MoMo-Adam, whose step size needs global inner products first), with the arithmetic in registers.
Measured on two cores (docs/performance.md): steps 2-4x faster than on the foreach path, and the
finiteness check exact (no overflow to confirm). GALA keeps the foreach path.

The C source is compiled on first use with the system C compiler (``$CC``, else ``gcc``; ``-O3
-march=native -fno-math-errno -fopenmp``) into a per-user cache (``$TUNEFREE_CACHE_DIR``, else
``$XDG_CACHE_HOME/tunefree`` or ``~/.cache/tunefree``), keyed by the source, the compiler and the CPU, so a
shared home directory never hands one machine another's instructions; later processes load it in
milliseconds. The library links the OpenMP runtime torch has already loaded and runs on
``torch.get_num_threads()`` threads. No ``-ffast-math``: the arithmetic is IEEE; only the vectorised sums
of the inner products are reordered (``-fno-math-errno`` only lets ``sqrt`` vectorise).

Chosen automatically: a bucket runs natively when the library is available and its tensors are fp32 or
fp64, contiguous, plain (not DTensors) and on the CPU, outside ``torch.compile``, and the options are ones
the kernels cover (all but AGD's ``amsgrad``/``clip``, SMES's ``padam_compat`` and ``alpha=0``); everything
else (GPU, bf16/fp16, strided or channels-last tensors, FSDP2, compiled steps) runs the foreach kernels,
with the same math. Without a compiler the first step prints a one-line notice and uses the foreach
kernels. ``TUNEFREE_NATIVE=0`` turns the tier off (also silencing the notice).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from tunefree.optim import kernels
from tunefree.optim._dtensor import is_dtensor

__all__ = [
    "ENABLED",
    "agd_step",
    "any_nonfinite",
    "library",
    "momo_adam_apply",
    "momo_adam_direction",
    "momo_apply",
    "momo_direction",
    "rsgdm_step",
    "smes_step",
    "split_nonfinite",
    "usable",
]

SOURCE = Path(__file__).with_name("native_kernels.c")
#: must match ``tf_native_version()`` in the C source
INTERFACE_VERSION = 3
#: whether the native tier may be used at all (``TUNEFREE_NATIVE=0`` in the environment: no)
ENABLED = os.environ.get("TUNEFREE_NATIVE", "1").strip().lower() not in ("0", "off", "false", "no")
#: below this many elements a kernel runs on one thread (waking the pool costs more than the work)
PARALLEL_NUMEL = 1 << 15

_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_CTYPE = {torch.float32: ctypes.c_float, torch.float64: ctypes.c_double}
_state: dict[str, object] = {}
_lock = threading.Lock()


def cache_dir() -> Path:
    """Where compiled kernels are kept."""
    explicit = os.environ.get("TUNEFREE_CACHE_DIR")
    if explicit:
        return Path(explicit) / "native"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tunefree" / "native"


def _cpu_fingerprint() -> str:
    """The CPU's model and feature flags (``-march=native`` code is only valid on a CPU that has them)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            lines = [line for line in handle if line.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _compile(compiler: str, target: Path) -> Optional[str]:
    """Build the library at ``target``; returns None on success, else the reason (one line)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    base = [compiler, "-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC", "-std=c99", str(SOURCE), "-lm"]
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        reason = ""
        # without OpenMP the kernels still work, on one thread
        for extra in (["-fopenmp"], []):
            try:
                result = subprocess.run(
                    [*base, *extra, "-o", str(built)], capture_output=True, text=True, timeout=120
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                return f"{compiler} could not run ({error})"
            if result.returncode == 0:
                os.replace(built, target)  # atomic: concurrent processes (DDP ranks) never load a partial file
                return None
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{compiler} failed to compile {SOURCE.name}: {reason}"


def library() -> Optional[ctypes.CDLL]:
    """The compiled kernels (built on first call), or None when the tier is off or cannot be built (then a
    one-line notice says why, once per process)."""
    if not ENABLED:
        return None
    if "lib" in _state:
        return _state["lib"]  # type: ignore[return-value]
    with _lock:
        if "lib" not in _state:
            lib, reason = _load()
            _state["lib"] = lib
            if reason is not None:
                warnings.warn(
                    f"tunefree: native CPU kernels unavailable ({reason}); CPU steps use the foreach kernels "
                    f"(same math, 2-4x slower steps). Install a C compiler (gcc) or set "
                    f"TUNEFREE_NATIVE=0 to silence this.",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return _state["lib"]  # type: ignore[return-value]


def _load() -> tuple[Optional[ctypes.CDLL], Optional[str]]:
    compiler_name = os.environ.get("CC", "gcc")
    compiler = shutil.which(compiler_name)
    if compiler is None:
        return None, f"no C compiler {compiler_name!r} on PATH"
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"{compiler_name} could not run ({error})"
    key = hashlib.sha256(
        b"\0".join(s.encode() for s in (SOURCE.read_text(), compiler, version, _cpu_fingerprint(), "v1"))
    ).hexdigest()[:20]
    target = cache_dir() / f"tunefree_native_{key}.so"
    if not target.exists():
        try:
            reason = _compile(compiler, target)
        except OSError as error:
            reason = f"cannot write the kernel cache {target.parent} ({error}); set TUNEFREE_CACHE_DIR"
        if reason is not None:
            return None, reason
    try:
        lib = ctypes.CDLL(str(target))
        found = lib.tf_native_version()
    except (OSError, AttributeError) as error:
        return None, f"cannot load {target} ({error})"
    if found != INTERFACE_VERSION:
        return None, f"{target} has interface {found}, expected {INTERFACE_VERSION}; delete it to rebuild"
    return lib, None


def usable(*lists: Sequence[Tensor]) -> bool:
    """Whether the native kernels can run on these aligned tensor lists: one CPU float dtype (fp32 or
    fp64), every tensor contiguous and plain (no DTensor: FSDP2 steps take the foreach path), on the eager
    CPU path (not under ``torch.compile``)."""
    if not ENABLED or not lists or not lists[0]:
        return False
    first = lists[0][0]
    if (not kernels.per_tensor_kernels(first.device)) or first.dtype not in _SUFFIX:
        return False
    for tensors in lists:
        for tensor in tensors:
            if (tensor.device.type != "cpu" or tensor.dtype != first.dtype or is_dtensor(tensor)
                    or not tensor.is_contiguous()):
                return False
    return library() is not None


def _arguments(lists: Sequence[Optional[Sequence[Tensor]]],
               per_tensor: Sequence[Sequence[float]] = ()) -> tuple[list[object], object, int, int, list[object]]:
    """Pointer arrays of the lists (None stays a NULL pointer), the sizes, the count, the thread count and
    the per-tensor scalars as double arrays; empty tensors are dropped (nothing to compute, maybe no
    storage), with their scalars."""
    keep = [i for i, t in enumerate(lists[0]) if t.numel()]  # type: ignore[index]
    count = len(keep)
    pointers: list[object] = []
    for tensors in lists:
        if tensors is None:
            pointers.append(None)
        else:
            pointers.append((ctypes.c_void_p * count)(*[tensors[i].data_ptr() for i in keep]))
    numels = [lists[0][i].numel() for i in keep]  # type: ignore[index]
    threads = torch.get_num_threads() if sum(numels) >= PARALLEL_NUMEL else 1
    scalars: list[object] = [(ctypes.c_double * count)(*[float(values[i]) for i in keep]) for values in per_tensor]
    return pointers, (ctypes.c_int64 * count)(*numels), count, max(1, min(threads, 256)), scalars


def _kernel(name: str, dtype: torch.dtype) -> object:
    return getattr(library(), f"tf_{name}_{_SUFFIX[dtype]}")


def any_nonfinite(tensors: Sequence[Tensor]) -> bool:
    """Whether any entry of the (usable) tensors is NaN or +-Inf; exact, one read of each tensor."""
    (pointer,), sizes, count, threads, _ = _arguments([tensors])
    if not count:
        return False
    return bool(_kernel("any_nonfinite", tensors[0].dtype)(pointer, sizes, count, threads))


def split_nonfinite(tensors: Sequence[Tensor]) -> tuple[bool, list[Tensor]]:
    """Check the tensors the native kernels can read (fp32/fp64, contiguous, CPU): ``(found, rest)``,
    ``found`` whether any of them holds a NaN/Inf (exact), ``rest`` the tensors left for another check
    (all of them when the native tier is unavailable)."""
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    found, rest = False, []
    for group in by_dtype.values():
        dense = [t for t in group if t.is_contiguous()]
        if usable(dense):
            found = found or any_nonfinite(dense)
            rest += [t for t in group if not t.is_contiguous()]
        else:
            rest += group
    return found, rest


def momo_direction(grads: Sequence[Tensor], momentum: Sequence[Tensor], params: Sequence[Tensor],
                   weight: float) -> tuple[float, float, float]:
    """``d <- d + weight (g - d)`` in place; returns ``(<g, x>, <d, x>, ||d||^2)`` with the new ``d``
    (accumulated in the tensors' dtype over blocks of 2048 elements, the blocks in fp64)."""
    (g, d, x), sizes, count, threads, _ = _arguments([grads, momentum, params])
    out = (ctypes.c_double * 3)()
    if count:
        ctype = _CTYPE[grads[0].dtype]
        _kernel("momo_direction", grads[0].dtype)(g, d, x, sizes, count, ctype(weight), threads, out)
    return out[0], out[1], out[2]


def momo_apply(momentum: Sequence[Tensor], params: Sequence[Tensor], tau: float, divisor: float) -> None:
    """``x <- (x - tau d) / divisor`` in place (no division when ``divisor`` is 1)."""
    (d, x), sizes, count, threads, _ = _arguments([momentum, params])
    if count:
        ctype = _CTYPE[params[0].dtype]
        _kernel("momo_apply", params[0].dtype)(
            d, x, sizes, count, ctype(tau), ctype(divisor), int(divisor != 1.0), threads
        )


def rsgdm_step(grads: Sequence[Tensor], momentum: Sequence[Tensor], previous: Optional[Sequence[Tensor]],
               params: Sequence[Tensor], beta: float, lr: float, weight_decay: float,
               measure: bool = False) -> Optional[tuple[float, float]]:
    """RSGDM's whole step in one pass (see ``tf_rsgdm_step`` in the C source); ``previous=None``: no
    correction term. With ``measure``: returns ``(||beta (g - g_prev)||^2, ||n||^2)`` (the new momentum)."""
    (g, n, p, x), sizes, count, threads, _ = _arguments([grads, momentum, previous, params])
    out = (ctypes.c_double * 2)() if measure else None
    if count:
        ctype = _CTYPE[params[0].dtype]
        _kernel("rsgdm_step", params[0].dtype)(
            g, n, p, x, sizes, count, ctype(beta), ctype(1.0 - beta), ctype(lr), ctype(weight_decay), threads, out
        )
    return (out[0], out[1]) if out is not None else None


def momo_adam_direction(grads: Sequence[Tensor], exp_avg: Sequence[Tensor], exp_avg_sq: Sequence[Tensor],
                        params: Sequence[Tensor], beta1: float, beta2: float, bias_correction2_sqrt: float,
                        eps: float) -> tuple[float, float, float]:
    """Adam's moment updates in place; returns ``(<g, x>, <m, x>, <m, u>)``, ``u = m / (sqrt(v) /
    bias_correction2_sqrt + eps)`` (Adam's direction, not stored)."""
    (g, m, v, x), sizes, count, threads, _ = _arguments([grads, exp_avg, exp_avg_sq, params])
    out = (ctypes.c_double * 3)()
    if count:
        c = _CTYPE[params[0].dtype]
        _kernel("momo_adam_direction", params[0].dtype)(
            g, m, v, x, sizes, count, c(1.0 - beta1), c(beta2), c(1.0 - beta2), c(bias_correction2_sqrt), c(eps),
            threads, out,
        )
    return out[0], out[1], out[2]


def momo_adam_apply(exp_avg: Sequence[Tensor], exp_avg_sq: Sequence[Tensor], params: Sequence[Tensor],
                    bias_correction2_sqrt: float, eps: float, tau: float, factor: float, divisor: float) -> None:
    """``x <- (factor x - tau u) / divisor`` in place with Adam's direction ``u`` recomputed (``factor``:
    decoupled decay, ``divisor``: proximal decay; 1 skips either)."""
    (m, v, x), sizes, count, threads, _ = _arguments([exp_avg, exp_avg_sq, params])
    if count:
        c = _CTYPE[params[0].dtype]
        _kernel("momo_adam_apply", params[0].dtype)(
            m, v, x, sizes, count, c(bias_correction2_sqrt), c(eps), c(tau), c(factor), c(divisor), threads
        )


#: exponents SMES's kernel takes by repeated square roots (others: exp(alpha log v))
_ROOTS = {0.5: 1, 0.25: 2, 0.125: 3}


def smes_step(grads: Sequence[Tensor], exp_avg: Sequence[Tensor], exp_avg_sq: Sequence[Tensor],
              params: Sequence[Tensor], scale: Sequence[float], shift: Sequence[float], beta1: float, beta2: float,
              lr: float, decay_factor: float, coupled_weight_decay: float, alpha: float) -> None:
    """SMES's step for ``alpha > 0`` in one pass (``tf_smes_step`` in the C source); ``scale``/``shift``:
    the per-tensor denominator terms."""
    (g, m, v, x), sizes, count, threads, (sc, sh) = _arguments([grads, exp_avg, exp_avg_sq, params], [scale, shift])
    if count:
        c = _CTYPE[params[0].dtype]
        _kernel("smes_step", params[0].dtype)(
            g, m, v, x, sizes, count, sc, sh, c(1.0 - beta1), c(beta2), c(1.0 - beta2), c(lr), c(decay_factor),
            c(coupled_weight_decay), c(alpha), _ROOTS.get(alpha, 0), threads,
        )


def agd_step(grads: Sequence[Tensor], exp_avg: Sequence[Tensor], exp_avg_sq: Sequence[Tensor],
             params: Sequence[Tensor], difference_scale: Sequence[float], previous_ratio: Sequence[float],
             threshold: Sequence[float], denominator_scale: Sequence[float], beta1: float, beta2: float, lr: float,
             decay_factor: float, coupled_weight_decay: float) -> float:
    """AGD's step without amsgrad or clip in one pass (``tf_agd_step`` in the C source); returns the number
    of SGD-like coordinates."""
    (g, m, b, x), sizes, count, threads, scalars = _arguments(
        [grads, exp_avg, exp_avg_sq, params], [difference_scale, previous_ratio, threshold, denominator_scale]
    )
    out = (ctypes.c_double * 1)()
    if count:
        c = _CTYPE[params[0].dtype]
        _kernel("agd_step", params[0].dtype)(
            g, m, b, x, sizes, count, *scalars, c(1.0 - beta1), c(beta2), c(1.0 - beta2), c(lr), c(decay_factor),
            c(coupled_weight_decay), threads, out,
        )
    return out[0]
