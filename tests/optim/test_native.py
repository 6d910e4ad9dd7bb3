"""The native CPU kernels' own behaviour: the compiler fallback, the cache, and a strided tensor (which
takes the foreach path). Their math is checked against the reference loops by the contract tests'
``native`` kernel path, and their NaN/Inf check by test_guard.py."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

import tunefree
import tunefree.optim.native as native

needs_compiler = pytest.mark.skipif(native.library() is None, reason="no C compiler: the native kernels are not built")
enabled = pytest.mark.skipif(not native.ENABLED, reason="TUNEFREE_NATIVE=0: the native tier is off")


def momo_run(steps: int = 5, shape: tuple[int, ...] = (64, 33)) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    param = torch.nn.Parameter(torch.randn(shape, generator=generator, dtype=torch.float64))
    optimizer = tunefree.MoMo([param], lr=0.5, weight_decay=0.1)
    for _ in range(steps):
        param.grad = torch.randn(shape, generator=generator, dtype=torch.float64)
        optimizer.step(loss=float(param.detach().square().sum()))
    return [param.detach().clone(), optimizer.state[param]["momentum"].clone()]


@enabled
def test_without_a_compiler_the_foreach_path_runs_with_one_notice(monkeypatch, tmp_path) -> None:
    expected = momo_run()
    monkeypatch.setattr(native, "_state", {})  # forget the library loaded by this process
    monkeypatch.setenv("CC", "no-such-compiler-tunefree")
    monkeypatch.setenv("TUNEFREE_CACHE_DIR", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="no C compiler 'no-such-compiler-tunefree' on PATH"):
        fallback = momo_run()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the notice comes once per process
        momo_run(steps=1)
    assert not any(tmp_path.rglob("*.so"))
    for got, want in zip(fallback, expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@enabled
def test_a_failing_compiler_falls_back(monkeypatch, tmp_path) -> None:
    script = tmp_path / "broken-cc"
    script.write_text("#!/bin/sh\necho 'broken-cc: internal error' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("CC", str(script))
    monkeypatch.setenv("TUNEFREE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.warns(RuntimeWarning, match="internal error"):
        assert native.library() is None
    assert not native.usable([torch.zeros(3)])


@needs_compiler
def test_the_library_is_built_once_into_the_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("TUNEFREE_CACHE_DIR", str(tmp_path))
    assert native.library() is not None
    built = list(tmp_path.rglob("*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native, "_state", {})
    assert native.library() is not None
    assert built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt


@needs_compiler
def test_which_tensors_run_natively() -> None:
    dense = torch.zeros(4, 5)
    assert native.usable([dense], [dense.clone()])
    assert not native.usable([dense.t()])  # strided
    assert not native.usable([dense.to(torch.bfloat16)])
    assert not native.usable([dense], [dense.double()])  # mixed dtypes


@needs_compiler
def test_a_strided_parameter_takes_the_foreach_path_with_the_same_result(monkeypatch) -> None:
    def run(layout) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        param = torch.nn.Parameter(layout(torch.randn((33, 64), generator=generator, dtype=torch.float64)))
        optimizer = tunefree.MoMo([param], lr=0.5, weight_decay=0.1)
        for _ in range(5):
            param.grad = torch.randn((33, 64), generator=generator, dtype=torch.float64)
            optimizer.step(loss=float(param.detach().square().sum()))
        return param.detach().clone()

    calls = []
    direction = native.momo_direction
    monkeypatch.setattr(native, "momo_direction", lambda *args: calls.append(1) or direction(*args))
    dense = run(lambda values: values.clone())
    assert calls, "a contiguous parameter runs natively"
    calls.clear()
    strided = run(lambda values: values.t().contiguous().t())  # same values, column-major
    assert not calls, "a strided parameter takes the foreach path"
    torch.testing.assert_close(strided, dense, rtol=1e-12, atol=1e-12)


def test_the_environment_switch_turns_the_tier_off_silently() -> None:
    code = "; ".join([
        "import warnings, torch, tunefree, tunefree.optim.native as n",
        "warnings.simplefilter('error', RuntimeWarning)",
        "p = torch.nn.Parameter(torch.ones(3)); p.grad = torch.ones(3); tunefree.RSGDM([p]).step()",
        "print(n.ENABLED, n.library(), float(p.sum()))",
    ])
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TUNEFREE_NATIVE": "0"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["False", "None"]
