import json

import pytest
import torch
import torch.nn.functional as F

from pipeline.__main__ import main
from pipeline.config import Paths, make_config
from pipeline.models.resnet import make_resnet18
from pipeline.train import runner
from pipeline.train.cls import ClsTask, lr_at

TINY = ["--epochs", "2", "--batch_size", "16", "--val_size", "32", "--train_limit", "64",
        "--test_limit", "32", "--eval_batch_size", "32", "--low_res_epochs", "1", "--low_res", "16"]


def test_overfits_two_tiny_batches():
    torch.manual_seed(0)
    model = make_resnet18()
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 10
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(12):
        for half in (slice(0, 8), slice(8, 16)):
            loss = F.cross_entropy(model(x[half]), y[half])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0] and all(torch.isfinite(torch.tensor(losses)))


def test_one_cycle_rises_then_falls_to_zero():
    lrs = [lr_at(s, 100, 1.0, 0.2) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(1.0) and lrs[100] == 0.0
    assert lrs.index(max(lrs)) == 20


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


DETERMINISTIC = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "resolution")


def test_resume_reproduces_an_uninterrupted_run(cifar_root, monkeypatch):
    paths = Paths(cifar_root)
    config = make_config("cls", "full", TINY)
    whole = runner.run(ClsTask(config, paths), "cls", cifar_root / "whole")

    interrupted = ClsTask(config, paths)
    first_epoch = interrupted.train_one_epoch

    def stop_in_second_epoch(epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return first_epoch(epoch)

    monkeypatch.setattr(interrupted, "train_one_epoch", stop_in_second_epoch)
    with pytest.raises(runner.PipelineError, match="--resume"):
        runner.run(interrupted, "cls", cifar_root / "parts")
    assert len(_metrics(cifar_root / "parts")) == 1 and (cifar_root / "parts" / "checkpoint.pt").exists()

    resumed = runner.run(ClsTask(config, paths), "cls", cifar_root / "parts", resume=True)
    for a, b in zip(_metrics(cifar_root / "whole"), _metrics(cifar_root / "parts"), strict=True):
        for key in DETERMINISTIC:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert resumed["test_accuracy"] == pytest.approx(whole["test_accuracy"])


def test_smoke_profile_end_to_end_writes_the_run(cifar_root, monkeypatch):
    monkeypatch.setenv("PIPELINE_ROOT", str(cifar_root))
    assert main(["train", "cls", "--profile", "smoke", "--train_limit", "64", "--test_limit", "32",
                 "--val_size", "16"]) == 0
    run_dir = cifar_root / "runs" / "cls"
    (record,) = _metrics(run_dir)
    assert {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_s",
            "elapsed_s"} <= record.keys()
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert {"seed", "git_commit", "packages", "device", "device_name", "train_wall_s"} <= provenance.keys()
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert {"model", "epoch", "config", "seed", "task", "rng"} <= checkpoint.keys()
    assert {"model", "optimizer", "step"} <= checkpoint["task"].keys()
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 1
    assert 0 <= json.loads((run_dir / "final.json").read_text())["test_accuracy"] <= 1


def test_bad_option_is_one_clear_line(capsys):
    assert main(["train", "cls", "--epoch", "3"]) == 2
    assert "Unknown option '--epoch'" in capsys.readouterr().err
