import contextlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.__main__ import main
from pipeline.config import REPO, Paths, make_config
from pipeline.models.resnet import make_resnet
from pipeline import runtime
from pipeline.train import runner
from pipeline.train.cls import ClsTask, lr_at
from pipeline.trained import ClsPredictor, build_resnet
from tests.conftest import WritesMarker, interrupt_at

TINY = ["--epochs", "2", "--batch_size", "16", "--val_size", "32", "--train_limit", "64",
        "--test_limit", "32", "--eval_batch_size", "32"]  # the default ramp spread over 2 epochs: 16, then 32 px


def test_overfits_two_tiny_batches():
    torch.manual_seed(0)
    model = make_resnet()
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


@pytest.mark.parametrize("options, stop", [([], 1), (["--lookahead", "true", "--epochs", "3"], 2)],
                         ids=["plain", "lookahead"])
def test_resume_reproduces_an_uninterrupted_run(cifar_root, monkeypatch, options, stop):
    """Interrupted and resumed; with --lookahead, stopped after step 8 of 12, the checkpoint keeps the average of the
    update at step 5, which neither the weights then nor the starting weights equal."""
    paths = Paths(cifar_root)
    config = make_config("cls", "full", [*TINY, *options])
    whole = runner.run(ClsTask(config, paths), "cls", cifar_root / "whole")

    interrupted = ClsTask(config, paths)
    interrupt_at(monkeypatch, interrupted, stop)
    with pytest.raises(runner.PipelineError, match="--resume"):
        runner.run(interrupted, "cls", cifar_root / "parts")
    assert len(_metrics(cifar_root / "parts")) == stop and (cifar_root / "parts" / "checkpoint.pt").exists()

    resumed = runner.run(ClsTask(config, paths), "cls", cifar_root / "parts", resume=True)
    for a, b in zip(_metrics(cifar_root / "whole"), _metrics(cifar_root / "parts"), strict=True):
        for key in DETERMINISTIC:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert resumed["test_accuracy"] == pytest.approx(whole["test_accuracy"])


def test_smoke_profile_end_to_end_writes_the_run(cifar_root, monkeypatch):
    monkeypatch.setenv("PIPELINE_ROOT", str(cifar_root))
    assert main(["train", "cls", "--profile", "smoke", "--train_limit", "64", "--test_limit", "32",
                 "--val_size", "16"]) == 0
    run_dir = cifar_root / "runs" / "cls" / "main"
    (record,) = _metrics(run_dir)
    assert {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_s",
            "elapsed_s"} <= record.keys()
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert {"seed", "git_commit", "packages", "device", "device_name", "train_wall_s"} <= provenance.keys()
    checkpoint = runtime.load_checkpoint(run_dir / "checkpoint.pt")
    assert {"model", "epoch", "config", "seed", "task", "rng"} <= checkpoint.keys()
    assert {"model", "optimizer", "step"} <= checkpoint["task"].keys()
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 1
    # The test score is the share of the kept predictions that match their labels, on every test image asked.
    final = json.loads((run_dir / "final.json").read_text())
    kept = np.load(run_dir / "test_predictions.npz")
    assert final["test_images"] == len(kept["labels"]) == 32
    assert final["test_accuracy"] == pytest.approx((kept["predictions"] == kept["labels"]).mean())
    logits = np.load(run_dir / "test_outputs.npz")["logits"]
    assert np.array_equal(logits.argmax(1), kept["predictions"])
    # The loss trace covers every step of the epoch, and provenance names the CPU by its numbers.
    steps = 64 // 32
    assert [point[0] for point in record["loss_trace"]] == [steps]
    assert {"cpu_vendor", "cpu_family", "cpu_model"} <= provenance.keys() or not Path("/proc/cpuinfo").exists()


def test_bad_option_is_one_clear_line(capsys):
    assert main(["train", "cls", "--epoch", "3"]) == 2
    assert "unknown option '--epoch'. Did you mean --epochs?" in capsys.readouterr().err


def test_too_few_images_for_one_batch_is_refused_clearly(cifar_root):
    config = make_config("cls", "smoke", ["--train_limit", "20", "--batch_size", "32"])
    with pytest.raises(runner.PipelineError, match="do not fill one batch of 32.*Raise --train_limit"):
        ClsTask(config, Paths(cifar_root))


def test_training_step_reads_nothing_back_from_the_device_per_step(cifar_root, monkeypatch):
    """Every .item()/.tolist()/float()/int()/bool() on a tensor in our code waits for the device; an epoch of
    30 steps may do that only at the progress-bar readings and once at its end."""
    from pipeline.train import cls as cls_module

    config = make_config("cls", "smoke", ["--train_limit", "240", "--batch_size", "8", "--val_size", "16"])
    task = ClsTask(config, Paths(cifar_root))
    reads = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if "/pipeline/" in caller:
                reads.append((_name, caller))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    task.train_one_epoch(0)
    steps = 240 // 8
    assert len(reads) <= steps // cls_module.REPORT_EVERY + 2, reads


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "runs" / "cls" / "main" / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": WritesMarker(marker)}, path)
    with pytest.raises(runner.PipelineError, match="checkpoint.pt is not a readable checkpoint"):
        runtime.load_checkpoint(path)
    assert not marker.exists()
    assert "weights_only=False" not in "".join(p.read_text() for p in (REPO / "pipeline").rglob("*.py"))


def test_device_choice_and_precision_contexts():
    assert runtime.pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(runner.PipelineError, match="--device cuda was asked for"):
            runtime.pick_device("cuda")
    # Devices autocast does not serve get a context that changes nothing, whatever the precision asked.
    assert isinstance(runtime.autocast(torch.device("meta"), "bf16"), contextlib.nullcontext)
    assert isinstance(runtime.autocast(torch.device("cpu"), "fp32"), contextlib.nullcontext)
    assert runtime.resolve_precision("auto", torch.device("mps")) == ("fp32", {})
    assert runtime.resolve_precision("auto", torch.device("cuda")) == ("fp16", {})
    # On the CPU the probe decides: bf16 only where it is clearly faster than fp32.
    for rates, chosen in (({"fp32": 100, "bf16": 150}, "bf16"), ({"fp32": 100, "bf16": 80}, "fp32"),
                          ({"fp32": 100, "bf16": 105}, "fp32")):
        with tempfile.TemporaryDirectory() as folder:
            assert runtime.resolve_precision("auto", torch.device("cpu"), rates.get,
                                            Path(folder) / "precision.json")[0] == chosen
    with pytest.raises(runner.PipelineError, match="--device must be"):
        make_config("cls", "full", ["--device", "tpu"])


def test_on_cuda_the_probe_times_fp16_and_bf16_against_fp32(tmp_path, monkeypatch):
    """An H200 trained the ResNet fastest in fp32 (TF32): on CUDA the probe decides, as on the CPU."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    cuda = torch.device("cuda")
    for bf16, rates, chosen in ((True, {"fp32": 3000, "bf16": 2700, "fp16": 2400}, "fp32"),
                                (True, {"fp32": 1000, "bf16": 2000, "fp16": 2100}, "fp16"),
                                (False, {"fp32": 1000, "fp16": 1500}, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        timed = []
        record = tmp_path / f"{chosen}-{bf16}.json"
        answer = runtime.resolve_precision("auto", cuda, lambda p: timed.append(p) or rates[p], record)
        assert answer[0] == chosen and set(timed) == set(rates) and answer[1]["probe_images_per_s"] == rates
        assert "gpu=NVIDIA H200" in next(iter(json.loads(record.read_text())))


def test_the_probe_answers_once_per_machine_and_is_reused(tmp_path):
    """Two runs on one machine never train in different precisions because a timing wobbled: the first run's
    answer is recorded and the next reuses it without timing anything; another machine is probed anew."""
    record, timed = tmp_path / "precision.json", []

    def rates(answer):
        def rate(precision):
            timed.append(precision)
            return answer[precision]
        return rate

    first = runtime.resolve_precision("auto", torch.device("cpu"), rates({"fp32": 100, "bf16": 150}), record)
    again = runtime.resolve_precision("auto", torch.device("cpu"), rates({"fp32": 100, "bf16": 90}), record)
    assert first[0] == again[0] == "bf16" and timed == ["fp32", "bf16"]
    assert again[1]["probe_images_per_s"] == {"fp32": 100, "bf16": 150} and again[1]["probe_record"] == str(record)
    stored = json.loads(record.read_text())
    stored[f"another machine | {runtime.machine_key()}"] = stored.pop(runtime.machine_key())
    record.write_text(json.dumps(stored))
    assert runtime.resolve_precision("auto", torch.device("cpu"), rates({"fp32": 100, "bf16": 90}), record)[0] == "fp32"
    assert timed == ["fp32", "bf16"] * 2


def test_a_torn_last_metrics_line_is_dropped_on_resume(cifar_root, monkeypatch, capsys):
    paths = Paths(cifar_root)
    config = make_config("cls", "full", TINY)
    whole = runner.run(ClsTask(config, paths), "cls", cifar_root / "whole")
    interrupted = ClsTask(config, paths)
    interrupt_at(monkeypatch, interrupted, 1)
    with pytest.raises(runner.PipelineError):
        runner.run(interrupted, "cls", cifar_root / "torn")
    # As if the machine died while epoch 2's line was being written, before its checkpoint.
    with open(cifar_root / "torn" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 1, "train_loss": 1.2')
    resumed = runner.run(ClsTask(config, paths), "cls", cifar_root / "torn", resume=True)
    assert "dropped the unfinished last line" in capsys.readouterr().out
    assert [r["epoch"] for r in _metrics(cifar_root / "torn")] == [0, 1]
    assert resumed["test_accuracy"] == pytest.approx(whole["test_accuracy"])


def test_provenance_names_threads_speed_flags_and_precision(cifar_root, monkeypatch):
    monkeypatch.setenv("PIPELINE_ROOT", str(cifar_root))
    assert main(["train", "cls", "--profile", "smoke", "--train_limit", "64", "--test_limit", "32",
                 "--val_size", "16", "--precision", "fp32"]) == 0
    provenance = json.loads((cifar_root / "runs" / "cls" / "main" / "provenance.json").read_text())
    assert provenance["threads"] == torch.get_num_threads() and "cpu_count" not in provenance
    assert provenance["precision"] == "fp32" and provenance["channels_last"] is True
    assert set(provenance["cpu_flags"]) <= set(runtime.SPEED_FLAGS)


def test_bench_reads_a_run_written_before_newer_fields_and_prints_every_part(cifar_root, capsys, monkeypatch):
    from pipeline.bench import bench, images_until

    import pipeline.bench

    monkeypatch.setattr(torch, "compile", lambda model: model)  # compiling is timed for real by make bench-cls
    monkeypatch.setattr(pipeline.bench, "BASELINE_STEPS", 2)  # what is printed, not how fast, is tested here

    paths, config, run_dir = Paths(cifar_root), make_config("cls", "full", TINY), cifar_root / "runs" / "cls" / "old"
    runner.run(ClsTask(config, paths), "cls", run_dir)
    saved = json.loads((run_dir / "config.json").read_text())
    del saved["shortcuts"]  # as a run trained before the switch existed wrote it
    (run_dir / "config.json").write_text(json.dumps(saved))
    bench("cls", config, run_dir, paths)
    out = capsys.readouterr().out
    assert "already holds a finished run of this config" in out
    for part in ("chosen: ", "| epoch | pixels |", "first reached 80%", "validation took", "throughput ratio: ",
                 "| image side | epochs | eager images/s |", "compiled (compile included)"):
        assert part in out, part
    speed = json.loads((run_dir / "step_speed.json").read_text())
    schedule = [r["resolution"] for r in _metrics(run_dir)]
    assert [s["side"] for s in speed["sides"]] == sorted(set(schedule))
    assert [s["epochs"] for s in speed["sides"]] == [schedule.count(s) for s in sorted(set(schedule))]
    assert speed["eager_s"] == pytest.approx(sum(s["epochs"] * speed["train_images"] / s["eager_images_per_s"]
                                                 for s in speed["sides"]), rel=0.05)
    # epochs logged before image counts were: images/s x seconds
    records = [{"images_per_s": 100.0, "train_s": 3.0, "val_accuracy": 0.5, "elapsed_s": 4.0},
               {"images": 200, "val_accuracy": 0.8, "elapsed_s": 7.0}]
    assert images_until(records, 0.8) == (500, 7.0) and images_until(records, 0.9) is None


def test_an_fp16_run_resumes_with_its_own_loss_scaler_whatever_would_be_chosen_today(cifar_root, monkeypatch):
    """The first run trained in fp16 with loss scaling; on resuming, today's choice would be fp32 (no scaler).
    The stored precision must come back before the scaler, so the scaler is the stored, enabled one."""
    paths, config = Paths(cifar_root), make_config("cls", "full", [*TINY, "--epochs", "2", "--width", "8"])
    monkeypatch.setattr(runner, "resolve_precision", lambda *args, **kwargs: ("fp16", {}))
    first = ClsTask(config, paths)
    interrupt_at(monkeypatch, first, 1)
    with pytest.raises(runner.PipelineError, match="--resume"):
        runner.run(first, "cls", cifar_root / "fp16")
    stored = runtime.load_checkpoint(cifar_root / "fp16" / "checkpoint.pt")["task"]
    assert stored["precision"] == "fp16" and stored["scaler"]["scale"] > 0
    stored["scaler"]["scale"] = 1234.0  # a scale no fresh scaler starts from, so only a loaded one has it

    monkeypatch.setattr(runner, "resolve_precision", lambda *args, **kwargs: ("fp32", {}))
    resumed = ClsTask(config, paths)
    assert not resumed.scaler.is_enabled()
    resumed.load_state_dict(stored, cifar_root / "fp16" / "checkpoint.pt")
    assert resumed.precision == "fp16" and resumed.scaler.is_enabled()
    assert resumed.scaler.get_scale() == stored["scaler"]["scale"]


def test_a_run_resumed_on_another_device_or_process_count_is_refused_and_a_resumption_is_recorded(cifar_root,
                                                                                                  monkeypatch):
    paths, config = Paths(cifar_root), make_config("cls", "full", [*TINY, "--precision", "fp32"])
    task = ClsTask(config, paths)
    interrupt_at(monkeypatch, task, 1)
    with pytest.raises(runner.PipelineError, match="--resume"):
        runner.run(task, "cls", cifar_root / "moved")
    provenance = cifar_root / "moved" / "provenance.json"
    info = json.loads(provenance.read_text())
    provenance.write_text(json.dumps({**info, "processes": 2}))  # as if the first part ran under torchrun
    with pytest.raises(runner.PipelineError, match=r"trained on cpu with 2 process\(es\), but this run would go on "
                                                   r"on cpu with 1"):
        runner.run(ClsTask(config, paths), "cls", cifar_root / "moved", resume=True)
    provenance.write_text(json.dumps(info))
    runner.run(ClsTask(config, paths), "cls", cifar_root / "moved", resume=True)
    (resumption,) = json.loads(provenance.read_text())["resumed"]
    assert resumption["after_epoch"] == 1 and resumption["git_commit"] and resumption["cpu"]


def test_a_run_name_that_is_a_path_is_refused_and_touches_nothing(cifar_root, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_ROOT", str(cifar_root))
    keep = cifar_root / "runs" / "x" / "metrics.jsonl"
    keep.parent.mkdir(parents=True)
    keep.write_text("keep me\n")
    for name in ("../x", "../../x", "/tmp/x", "a/b", ".hidden", ""):
        assert main(["train", "cls", "--profile", "smoke", "--name", name]) == 2
        assert "is not a run name" in capsys.readouterr().err
    assert keep.read_text() == "keep me\n"
    assert not (cifar_root / "runs" / "cls").exists()


def test_recipe_options_change_what_they_name_and_nothing_else(cifar_root):
    """Each candidate of the recipe experiment, on its own: the resolution per epoch, alternating flips, cutout,
    batch-norm parameters apart, the averaged weights scored, shifted test-time views."""
    from pipeline.data.cifar10 import MEAN_PIXEL, augment
    from pipeline.train.cls import parameter_groups, resolution_at
    from pipeline.trained import tta_views

    config = make_config("cls", "full", ["--epochs", "3", "--resolutions", "16,24,32"])
    assert [resolution_at(e, config) for e in range(3)] == [16, 24, 32]
    with pytest.raises(runner.PipelineError, match=r"gives 2 image sides \(16,32\) for 3 epochs: give one side per"):
        make_config("cls", "full", ["--epochs", "3", "--resolutions", "16,32"])
    with pytest.raises(runner.PipelineError, match="image sides from 8 to 32"):
        make_config("cls", "full", ["--epochs", "3", "--resolutions", "16,40,32"])
    # Another number of epochs and no --resolutions: the default ramp, spread from its first side to its last.
    assert make_config("cls").resolutions == "16,16,16,20,24,32,32"
    assert make_config("cls", "full", ["--epochs", "8"]).resolutions == "16,16,16,20,20,24,32,32"
    assert make_config("cls", "full", ["--epochs", "2"]).resolutions == "16,32"
    assert make_config("cls", "smoke").resolutions == "32"
    old = make_config("cls", "full", {"epochs": 5, "resolutions": ""})  # the earlier default: 20 px, then 32
    assert [resolution_at(e, old) for e in range(5)] == [20, 20, 20, 32, 32]

    images = torch.randint(0, 255, (6, 3, 32, 32), dtype=torch.uint8)
    plain = augment(images, torch.Generator().manual_seed(1))
    flipped = augment(images, torch.Generator().manual_seed(1), flips=torch.ones(6, dtype=torch.bool))
    unflipped = augment(images, torch.Generator().manual_seed(1), flips=torch.zeros(6, dtype=torch.bool))
    assert torch.equal(flipped, unflipped.flip(3))  # the same crops, the side as given
    cut = augment(images, torch.Generator().manual_seed(1), cutout=8)
    changed = (cut != plain).any(1)  # (B, H, W): pixels the square covered
    fill = torch.tensor(MEAN_PIXEL, dtype=torch.uint8).view(1, 3, 1, 1).expand_as(cut)
    assert torch.equal(cut[changed[:, None].expand_as(cut)], fill[changed[:, None].expand_as(cut)])
    assert all(0 < int(c.sum()) <= 64 for c in changed)

    default, fast = (build_resnet(make_config("cls", "full", options), torch.device("cpu"))
                     for options in ([], ["--bn_momentum", "0.4"]))
    assert {m.momentum for m in default.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
    assert {m.momentum for m in fast.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.4}
    assert str(default) == str(fast).replace("momentum=0.4", "momentum=0.1")
    with pytest.raises(runner.PipelineError, match=r"--bn_momentum must lie in \(0, 1\], got 0.0"):
        make_config("cls", "full", ["--bn_momentum", "0"])

    model = make_resnet(18, width=8)
    groups = parameter_groups(model, make_config("cls", "full", ["--bn_weight_decay", "false", "--bn_lr_scale", "4"]))
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0] and [g["lr_scale"] for g in groups] == [1.0, 4.0]
    together = make_config("cls", "full", ["--bn_weight_decay", "true", "--bn_lr_scale", "1"])
    assert all(p.dim() == 1 for p in groups[1]["params"]) and len(parameter_groups(model, together)) == 1

    x = torch.randn(2, 3, 32, 32)
    views = tta_views(x, flip=True, translate=2)
    assert len(views) == 6 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[1][..., 2:, 2:], x[..., :30, :30])  # shifted down-right by two pixels
    assert len(tta_views(x, flip=True, translate=0)) == 2 and len(tta_views(x, flip=False, translate=0)) == 1


def test_an_averaged_run_scores_its_averaged_weights(cifar_root):
    paths = Paths(cifar_root)
    config = make_config("cls", "full", [*TINY, "--precision", "fp32", "--ema", "0.5", "--flip", "alternate"])
    task = ClsTask(config, paths)
    final = runner.run(task, "cls", cifar_root / "ema")
    state = runtime.load_checkpoint(cifar_root / "ema" / "checkpoint.pt")["task"]
    assert any(not torch.equal(state["model"][k], state["scored_model"][k]) for k in state["model"]
               if state["model"][k].is_floating_point())
    scored = ClsTask(config, paths).model
    scored.load_state_dict(state["scored_model"])
    logits = ClsPredictor(scored, config, task.device, "fp32", config.test_tta).logits(task.test_images)
    assert final["test_accuracy"] == pytest.approx((logits.argmax(1) == task.test_labels).float().mean().item())


def test_averaging_the_last_epochs_scores_the_mean_of_their_steps_and_changes_nothing_else(cifar_root, monkeypatch):
    """--average_epochs 1 of 2 (4 steps an epoch): the scored weights and batch-norm statistics are the mean of the
    plain run's after each step of the second epoch; the weights trained, and the first epoch's scores, are the plain
    run's."""
    paths, after_step = Paths(cifar_root), []
    real_update = ClsTask.update

    def update(self, loss, lr):
        real_update(self, loss, lr)
        after_step.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})

    monkeypatch.setattr(ClsTask, "update", update)
    plain_config = make_config("cls", "full", [*TINY, "--precision", "fp32"])
    runner.run(ClsTask(plain_config, paths), "cls", cifar_root / "plain")
    plain_steps, after_step[:] = after_step[:], []
    config = make_config("cls", "full", [*TINY, "--precision", "fp32", "--average_epochs", "1"])
    runner.run(ClsTask(config, paths), "cls", cifar_root / "late")
    plain = runtime.load_checkpoint(cifar_root / "plain" / "checkpoint.pt")["task"]["model"]
    state = runtime.load_checkpoint(cifar_root / "late" / "checkpoint.pt")["task"]
    assert len(plain_steps) == 8 and all(torch.equal(state["model"][k], plain[k]) for k in plain)
    for k, v in state["scored_model"].items():
        if v.is_floating_point():
            assert torch.allclose(v, torch.stack([s[k] for s in plain_steps[4:]]).mean(0), atol=1e-6), k
    assert any(not torch.equal(state["scored_model"][k], plain[k]) for k in plain if plain[k].is_floating_point())
    first_epoch = [_metrics(cifar_root / run)[0] for run in ("plain", "late")]
    assert first_epoch[0]["val_accuracy"] == first_epoch[1]["val_accuracy"]
    with pytest.raises(runner.PipelineError, match=r"--average_epochs must lie between 0 and --epochs \(2\), got 3"):
        make_config("cls", "full", [*TINY, "--average_epochs", "3"])
    for clash in (["--average_epochs", "1", "--ema", "0.9"], ["--lookahead", "true", "--ema", "0.9"],
                  ["--lookahead", "true", "--average_epochs", "1"]):
        with pytest.raises(runner.PipelineError, match="--ema, --average_epochs and --lookahead each choose the"):
            make_config("cls", "full", [*TINY, *clash])


def test_lookahead_sets_the_model_to_its_average_every_five_steps_and_changes_nothing_before(cifar_root, monkeypatch):
    """--lookahead over 8 steps (2 epochs of 4): the model is set to the average after steps 5 and 8 (the last) only,
    the average each time moved towards the weights by 1 - 0.95^5 (steps taken / 8)^3; up to the first update the
    run is the plain run, step for step."""
    paths, after_step, after_look = Paths(cifar_root), [], {}
    real_update, real_look_ahead = ClsTask.update, ClsTask.look_ahead

    def floats(model):
        return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def update(self, loss, lr):
        real_update(self, loss, lr)
        after_step.append(floats(self.model))

    def look_ahead(self, steps_taken):
        real_look_ahead(self, steps_taken)
        after_look[steps_taken] = floats(self.model)

    monkeypatch.setattr(ClsTask, "update", update)
    monkeypatch.setattr(ClsTask, "look_ahead", look_ahead)
    runner.run(ClsTask(make_config("cls", "full", [*TINY, "--precision", "fp32"]), paths), "cls", cifar_root / "plain")
    plain_steps, after_step[:] = after_step[:], []
    assert not after_look
    task = ClsTask(make_config("cls", "full", [*TINY, "--precision", "fp32", "--lookahead", "true"]), paths)
    start = floats(task.model)
    runner.run(task, "cls", cifar_root / "lookahead")
    assert sorted(after_look) == [5, 8] and len(after_step) == 8
    assert all(torch.equal(after_step[i][k], plain_steps[i][k]) for i in range(5) for k in start)
    average = start
    for steps_taken in (5, 8):
        keep = 0.95 ** 5 * (steps_taken / 8) ** 3
        average = {k: keep * average[k] + (1 - keep) * after_step[steps_taken - 1][k] for k in start}
        assert all(torch.allclose(after_look[steps_taken][k], average[k], atol=1e-6) for k in start), steps_taken
    assert not torch.equal(after_look[5]["fc.weight"], after_step[4]["fc.weight"])
    final = runtime.load_checkpoint(cifar_root / "lookahead" / "checkpoint.pt")["task"]["model"]
    assert all(torch.equal(final[k], after_look[8][k]) for k in start)


def test_the_loss_trace_averages_windows_and_folds_a_short_last_one_into_the_one_before():
    def trace(steps, first=0):
        t = runner.LossTrace(torch.device("cpu"), first)
        for step in range(first, first + steps):
            t.add(step, torch.tensor(float(step)), 1)
        return t.points(first + steps, runtime.World())

    assert trace(60) == [[25, 12.0], [60, 42.0]]  # steps 25-59 together: 10 leftover steps are too few alone
    assert trace(70) == [[25, 12.0], [50, 37.0], [70, 59.5]]  # 20 leftover steps stand alone
    assert trace(10, first=100) == [[110, 104.5]]


def test_the_views_grid_scores_the_validation_images_the_run_was_validated_on(cifar_root, monkeypatch):
    from pipeline.evaluate import views

    paths = Paths(cifar_root)
    task = ClsTask(make_config("cls", "full", TINY), paths)
    runner.run(task, "cls", paths.run("cls"))
    scored, real_logits = [], ClsPredictor.logits
    monkeypatch.setattr(ClsPredictor, "logits", lambda self, images: scored.append(images) or real_logits(self, images))
    record = views.score_views(paths, paths.run("cls"), [(False, 0), (True, 0), (True, 1)])
    settings = record["settings"]
    assert set(settings) == {"image alone", "mirror", "mirror + shift 1"} and record["images"] == 32
    assert len(scored) == 3 and all(torch.equal(images, task.val_images) for images in scored)
    assert [settings[k]["passes"] for k in ("image alone", "mirror", "mirror + shift 1")] == [1, 2, 6]
    # The image alone, as validation scores while training: the accuracy the run's last epoch logged.
    assert settings["image alone"]["val_accuracy"] == _metrics(paths.run("cls"))[-1]["val_accuracy"]
    assert all(len(s["wrong"]) == round(32 * (1 - s["val_accuracy"])) for s in settings.values())
    calls = []
    real = views.ClsPredictor
    monkeypatch.setattr(views, "ClsPredictor", lambda *a: calls.append((a[4], a[1].tta_translate)) or real(*a))
    record = views.score_views(paths, paths.run("cls"), [(False, 0), (True, 1), (True, 2)])
    assert calls == [(True, 2)] and len(record["settings"]) == 4  # only the setting not scored before
    (paths.run("cls") / "checkpoint.pt").unlink()
    with pytest.raises(runner.PipelineError, match=r"main/checkpoint\.pt is missing: the views experiment"):
        views.score_views(paths, paths.run("cls"), [(True, 3)])
