"""The classifier family (genloom's image feature network) through the one training loop."""

import json

import pytest
import torch

from genloom.callbacks import default_callbacks
from genloom.families import load_run_config
from genloom.errors import GenloomError
from genloom.models.classifier import Classifier, ClassifierConfig
from genloom.checkpoints import load_model
from genloom.train import Trainer


def digits_cfg(out, steps=40, **train):
    over = [f"train.out_dir='{out}'", f"train.max_steps={steps}", "train.batch_size=64", "train.lr=3e-3",
            "train.warmup_steps=5", "train.eval_interval=20", "train.ckpt_interval=20", "train.log_interval=10",
            "family='classifier'", "data.source='digits'", "model.width=8", "model.feature_dim=32"]
    over += [f"train.{k}={json.dumps(v)}" for k, v in train.items()]
    return load_run_config(None, over)


def test_shapes_and_features():
    m = Classifier(ClassifierConfig(image_size=28, channels=1, num_classes=10, width=8, feature_dim=16)).eval()
    x = torch.rand(5, 1, 28, 28)
    logits, loss = m(x, torch.arange(5))
    assert logits.shape == (5, 10) and loss.ndim == 0
    assert m.features(x).shape == (5, 16)
    assert m(x)[1] is None


def test_trains_on_digits_exports_and_reloads(tmp_path):
    cfg = digits_cfg(tmp_path / "run", steps=60, metrics=["accuracy"])
    summary = Trainer(cfg, callbacks=default_callbacks(progress=False, cfg=cfg)).fit()
    assert summary["best_val_loss"] < 1.0  # chance level is ln(10) = 2.30
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_accuracy" in r]
    assert evals and evals[-1]["val_accuracy"] > 0.7
    assert any("test_accuracy" in r for r in rows)  # the EvalMetrics callback wrote its figures
    lm = load_model(tmp_path / "run")  # the best export: safetensors, no tokenizer
    assert lm.family == "classifier" and lm.tokenizer is None
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert config["card"]["val_accuracy"] == pytest.approx(max(r["val_accuracy"] for r in evals if r["val_loss"]
                                                               == min(e["val_loss"] for e in evals)))
    assert (tmp_path / "run" / "loss.png").exists()


def test_resume_continues_exactly(tmp_path):
    class StopAt:
        def __init__(self, n):
            self.n = n

        def __getattr__(self, name):
            return lambda trainer, info: (trainer.request_stop() if name == "on_step_end" and info["step"] == self.n
                                          else None)

    straight = Trainer(digits_cfg(tmp_path / "a", steps=12), callbacks=[])
    straight.fit()
    first = Trainer(digits_cfg(tmp_path / "b", steps=12), callbacks=[StopAt(5)])
    first.fit()
    assert first.step == 5
    second = Trainer(digits_cfg(tmp_path / "b", steps=12), resume=True, callbacks=[])
    second.fit()
    for (k, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k


def test_bad_config_errors(tmp_path):
    with pytest.raises(GenloomError, match="unknown config key 'model.depth'"):
        load_run_config(None, ["family='classifier'", "model.depth=3"])
    with pytest.raises(GenloomError, match="unknown train.metrics 'fid'.*accuracy"):
        Trainer(digits_cfg(tmp_path / "x", metrics=["fid"]), callbacks=[])
    with pytest.raises(GenloomError, match="unknown image source 'cifar10'"):
        Trainer(load_run_config(None, ["family='classifier'", "data.source='cifar10'"]), callbacks=[])
