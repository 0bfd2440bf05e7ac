"""The one optimiser step (runtime.optimizer_step) that both models train through, in fp32 and bf16."""

import pytest
import torch

from pipeline import runtime
from pipeline.config import Paths, make_config
from pipeline.train import runner
from pipeline.train.cls import ClsTask
from pipeline.train.mt import MtTask
from tests.conftest import cifar_members, write_cifar_archive, write_tiny_corpus


def _counting(monkeypatch) -> list:
    """Every call of the one step helper, as the tasks make it."""
    calls, real = [], runtime.optimizer_step

    def counted(loss, optimizer, scaler=None, clip_norm=0.0, parameters=None):
        calls.append((loss.dtype, clip_norm))
        return real(loss, optimizer, scaler, clip_norm, parameters)

    monkeypatch.setattr(runner, "optimizer_step", counted)
    return calls


def _task(model: str, root, precision: str):
    if model == "cls":
        write_cifar_archive(root / "data" / "cifar-10-python.tar.gz", cifar_members(per_batch=40))
        config = make_config("cls", "smoke", ["--train_limit", "16", "--batch_size", "8", "--val_size", "16",
                                              "--width", "8", "--precision", precision])
        return ClsTask(config, Paths(root))
    write_tiny_corpus(root / "tiny.tsv")
    config = make_config("mt", "smoke", ["--corpus", str(root / "tiny.tsv"), "--tokens_per_batch", "400",
                                         "--precision", precision])
    return MtTask(config, Paths(root))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("model", ["cls", "mt"])
def test_both_models_train_two_steps_through_the_one_helper(model, precision, tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR10_ARCHIVE", raising=False)
    task = _task(model, tmp_path, precision)
    batches = task.steps_per_epoch if model == "cls" else len(task._batches(0))
    assert batches >= 2
    calls = _counting(monkeypatch)
    before = [p.detach().clone() for p in task.model.parameters()]
    record = task.train_one_epoch(0)
    assert len(calls) == batches == task.step
    assert all(clip == (task.config.clip_norm if model == "mt" else 0.0) for _, clip in calls)
    assert torch.isfinite(torch.tensor(record["train_loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, task.model.parameters()))


def test_the_step_clips_the_true_gradients_and_a_zero_clip_clips_nothing():
    torch.manual_seed(0)
    weights = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weights], lr=1.0)
    runtime.optimizer_step((weights * 100).sum(), optimizer, runtime.loss_scaler(torch.device("cpu"), "fp32"),
                           clip_norm=1.0, parameters=[weights])
    assert torch.allclose(1 - weights.detach(), torch.full((3,), 1 / 3 ** 0.5), atol=1e-5)  # gradient norm 1
    runtime.optimizer_step((weights * 100).sum(), optimizer, clip_norm=0.0)
    assert torch.allclose(1 - weights.detach(), torch.full((3,), 1 / 3 ** 0.5 + 100), atol=1e-4)
    runtime.set_lr(optimizer, 0.5)
    assert optimizer.param_groups[0]["lr"] == 0.5
