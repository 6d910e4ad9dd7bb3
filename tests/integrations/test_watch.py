"""The watcher inside trainers: HF Trainer logs reach TensorBoard, Lightning's log_dict reaches metrics.csv."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from tunefree import MoMo, Thresholds

from ._shared import load_example


def test_hf_trainer_writes_tau_and_alerts_to_tensorboard(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import TrainingArguments

    from tunefree.integrations.hf import TunefreeTrainer, WatchCallback

    example = load_example("hf_trainer_momo.py")
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=12, per_device_train_batch_size=8, logging_steps=3,
        save_strategy="no", report_to=["tensorboard"], use_cpu=True, disable_tqdm=True,
        lr_scheduler_type="constant", dataloader_num_workers=0,
    )
    callback = WatchCallback(thresholds=Thresholds(no_progress_steps=6), warn=False)
    trainer = TunefreeTrainer(
        model=example.TinyRegressor(), args=args, train_dataset=example.RegressionData(),
        optimizer_cls_and_kwargs=(MoMo, {"lr": 1.0, "lower_bound": 5.0}), callbacks=[callback],
    )
    assert sum(isinstance(c, WatchCallback) for c in trainer.callback_handler.callbacks) == 1
    trainer.train()
    (event_file,) = Path(tmp_path).rglob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file.parent), size_guidance={"scalars": 0})
    events.Reload()
    taus = events.Scalars("train/tunefree/tau")
    assert [e.step for e in taus] == [3, 6, 9, 12] and all(e.value == 0.0 for e in taus)
    assert all(math.isfinite(e.value) for e in events.Scalars("train/tunefree/loss"))
    # one no_progress alert per param group (the Trainer makes two: with and without weight decay), once
    groups = len(trainer.optimizer.param_groups)
    assert groups == 2 and events.Scalars("train/tunefree/tau/group1")
    alerts = events.Scalars("train/tunefree/alerts/no_progress")
    assert [(e.step, e.value) for e in alerts] == [(6, groups), (9, groups), (12, groups)]


def test_tunefree_trainer_watches_by_default(tmp_path):
    pytest.importorskip("transformers")
    from tunefree.integrations.hf import WatchCallback

    example = load_example("hf_trainer_momo.py")
    result = example.train(max_steps=4, output_dir=str(tmp_path))
    (callback,) = [c for c in result.trainer.callback_handler.callbacks if isinstance(c, WatchCallback)]
    assert result.trainer.callback_handler.callbacks[0] is callback  # before the reporting callbacks


def test_lightning_logs_tau_to_metrics_csv(tmp_path):
    L = pytest.importorskip("lightning")
    import torch
    from lightning.pytorch.loggers import CSVLogger

    from tunefree.integrations.lightning import WatchCallback

    example = load_example("lightning_momo.py")
    trainer = L.Trainer(
        max_steps=8, logger=CSVLogger(str(tmp_path)), log_every_n_steps=2, callbacks=[WatchCallback(warn=False)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )
    trainer.fit(example.Regressor(), torch.utils.data.DataLoader(example.make_data(), batch_size=16))
    (metrics,) = Path(tmp_path).rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    taus = [float(r["tunefree/tau"]) for r in rows if r.get("tunefree/tau")]
    assert len(taus) == 4 and all(math.isfinite(t) and t > 0 for t in taus)
    assert "tunefree/tau_cap" in rows[0]
