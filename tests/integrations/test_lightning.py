"""MoMo / GALA in PyTorch Lightning (automatic optimization): which loss reaches the optimizer, per path."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("lightning")

from tunefree import MoMo  # noqa: E402

from ._shared import SpyMoMo, load_example  # noqa: E402

example = load_example("lightning_momo.py")


def _assert_adapts(taus, steps=5):
    assert len(taus) == steps
    assert all(math.isfinite(t) and t >= 0 for t in taus)
    assert len(set(taus)) > 1, f"tau never changed: {taus}"


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_closure_path_delivers_the_loss_without_helper(precision):
    result = example.train(max_steps=5, precision=precision, helper=False, optimizer_cls=SpyMoMo)
    _assert_adapts(result.taus)
    # Lightning's closure returns this step's training_step loss: MoMo computed with exactly that
    assert result.optimizer.fed == pytest.approx(result.module.seen_losses, rel=1e-6)


def test_cpu_replaces_16_mixed_by_bf16_mixed():
    with pytest.warns(UserWarning, match="bf16-mixed"):
        result = example.train(max_steps=5, precision="16-mixed", helper=False)
    assert result.trainer.precision == "bf16-mixed"
    _assert_adapts(result.taus)


def test_fp16_gradscaler_path_needs_the_helper():
    # GradScaler path: Lightning runs the closure itself, then scaler.step(optimizer) -> a bare step()
    with pytest.raises(ValueError, match="needs the mini-batch loss"):
        example.train(max_steps=2, fp16_scaler=True, helper=False)
    result = example.train(max_steps=5, fp16_scaler=True, helper=True, optimizer_cls=SpyMoMo)
    _assert_adapts(result.taus)
    assert result.optimizer.fed == pytest.approx(result.module.seen_losses, rel=1e-6)  # unscaled loss


@pytest.mark.parametrize("fp16_scaler", [False, True])
def test_grad_accumulation_with_helper_feeds_mean_loss(fp16_scaler):
    result = example.train(max_steps=5, accumulate=3, helper=True, optimizer_cls=SpyMoMo, fp16_scaler=fp16_scaler)
    seen, fed = result.module.seen_losses, result.optimizer.fed
    assert len(seen) == 15 and len(fed) == 5
    for step in range(5):
        assert fed[step] == pytest.approx(sum(seen[3 * step:3 * step + 3]) / 3, rel=1e-5), f"step {step}"
    _assert_adapts(result.taus)


def test_grad_accumulation_without_helper_gets_only_last_micro_batch():
    # documents why the helper exists: the closure covers only the last micro-batch, divided by N
    result = example.train(max_steps=3, accumulate=2, helper=False, optimizer_cls=SpyMoMo)
    seen, fed = result.module.seen_losses, result.optimizer.fed
    assert fed == pytest.approx([seen[2 * k + 1] / 2 for k in range(3)], rel=1e-6)


def test_helper_refuses_to_guess_when_on_train_batch_end_skips_super():
    class Broken(example.FedRegressor):
        def on_train_batch_end(self, outputs, batch, batch_idx):  # no super() call
            pass

    import lightning as L

    module = Broken(MoMo, {"lr": 1.0})
    loader = example.torch.utils.data.DataLoader(example.make_data(), batch_size=16)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", accumulate_grad_batches=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(RuntimeError, match="super\\(\\).on_train_batch_end"):
        trainer.fit(module, loader)


def test_gala_closure_path():
    try:
        from tunefree.optim.gala import GALA
    except ImportError as exc:  # developed separately
        pytest.skip(f"GALA not importable: {exc}")
    result = example.train(max_steps=5, helper=False, optimizer_cls=GALA, optimizer_kwargs={"lr": 0.1})
    _assert_adapts(result.taus)  # GALA's adapted lr
    # GALA calls the closure twice from its second step on: 1 + 2 * 4 training_step calls
    assert len(result.module.seen_losses) == 9
