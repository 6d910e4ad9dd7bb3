"""MoMo inside the Hugging Face Trainer: the loss reaches the optimizer, also with gradient accumulation."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import torch  # noqa: E402

from tunefree import MoMoAdam  # noqa: E402

from ._shared import SpyMoMo, load_example  # noqa: E402

example = load_example("hf_trainer_momo.py")


@pytest.mark.parametrize("helper", [True, "patch"])
def test_loss_reaches_momo_and_tau_adapts(helper, tmp_path):
    result = example.train(max_steps=6, helper=helper, output_dir=str(tmp_path))
    assert len(result.taus) == 6
    assert all(math.isfinite(t) and t >= 0 for t in result.taus)
    assert len(set(result.taus)) > 1, f"tau never changed: {result.taus}"
    assert int(result.optimizer.global_state["step"]) == 6


def test_without_helper_momo_raises_missing_loss(tmp_path):
    with pytest.raises(ValueError, match="needs the mini-batch loss") as info:
        example.train(max_steps=2, helper=False, output_dir=str(tmp_path))
    assert "observe_loss" in str(info.value)


def test_grad_accumulation_feeds_mean_of_micro_batches(tmp_path):
    # 256 samples / batch 8 = 32 micro-batches per epoch = 10 steps of 3 + one short step of 2; 12 steps
    # cross into the second epoch, so the short last accumulation of an epoch is covered too.
    result = example.train(max_steps=12, grad_accum=3, optimizer_cls=SpyMoMo, output_dir=str(tmp_path))
    fed = result.optimizer.fed
    seen = result.trainer.model.seen_losses  # unscaled loss of every training forward pass, in order
    assert len(fed) == 12 and len(seen) == 3 * 10 + 2 + 3
    sizes = [3] * 10 + [2, 3]
    start = 0
    for step, size in enumerate(sizes):
        expected = sum(seen[start:start + size]) / size
        assert fed[step] == pytest.approx(expected, rel=1e-5), f"step {step}"
        start += size


def test_gpt2_token_normalised_loss_is_accumulated_mean(tmp_path):
    # GPT-2 takes num_items_in_batch: the Trainer normalises by the token count of the whole accumulated
    # batch instead of dividing by the accumulation steps; the fed loss must still be the batch mean.
    token_means: list[float] = []

    def hook(module, args, kwargs, output):
        if module.training:
            logits, labels = output.logits[:, :-1], kwargs["labels"][:, 1:]
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
            token_means.append(float(ce.detach()))

    import transformers

    original_init = transformers.GPT2LMHeadModel.__init__

    def init_with_hook(self, *a, **kw):
        original_init(self, *a, **kw)
        self.register_forward_hook(hook, with_kwargs=True)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformers.GPT2LMHeadModel, "__init__", init_with_hook)
        result = example.train(max_steps=2, grad_accum=2, model="gpt2", batch_size=4,
                               optimizer_cls=SpyMoMo, output_dir=str(tmp_path))
    fed = result.optimizer.fed
    assert len(fed) == 2 and len(token_means) == 4
    for step in range(2):
        assert fed[step] == pytest.approx(sum(token_means[2 * step:2 * step + 2]) / 2, rel=1e-4)
    assert 3.0 < fed[0] < 5.5  # about ln(64) for an untrained LM on random tokens


def test_bf16_autocast_on_cpu(tmp_path):
    result = example.train(max_steps=4, bf16=True, optimizer_cls=MoMoAdam,
                           optimizer_kwargs={"lr": 1e-2}, output_dir=str(tmp_path))
    assert len(result.taus) == 4 and len(set(result.taus)) > 1
