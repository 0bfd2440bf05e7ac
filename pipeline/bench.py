"""Benchmarks: train the default profile, print its per-epoch table; for the ResNet, time a plain baseline."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from pipeline.config import CONFIG, DECODE_SPEED, FINAL, METRICS, PROVENANCE, STEP_SPEED, TEST_OUTPUTS, Paths, \
    PipelineError, changed_fields
from pipeline.io import read_json, read_jsonl, write_json
from pipeline.train import train
from pipeline.runtime import SPEED_FLAGS, pick_device, progress, provenance as machine_provenance

BASELINE_STEPS = 30  # timed steps per recipe, in ROUNDS alternating rounds, each after WARMUP_STEPS untimed ones
ROUNDS = 2
WARMUP_STEPS = 2
# What a speed measurement records of where it ran, beside its numbers.
MACHINE_FIELDS = ("device", "device_name", "cpu", "cpu_vendor", "cpu_family", "cpu_model", "cpu_flags", "threads",
                  "git_commit", "started")


def _train(model: str, config, run_dir: Path, paths: Paths) -> tuple[list[dict], dict]:
    """The run's epochs and final scores: trained now, or read from a finished run of exactly this config."""
    if (run_dir / FINAL).exists():
        changed = changed_fields(model, read_json(run_dir / CONFIG, "run config"), config)
        if changed:
            raise PipelineError(
                f"{run_dir} holds a finished run with other values of {', '.join(changed)} than asked for here, "
                "so its numbers would not measure this config. Give the benchmark its own run (--name NAME), "
                "or delete that folder to train it again."
            )
        print(f"{run_dir} already holds a finished run of this config; its numbers follow (delete it to train again).")
    else:
        train(model, config, run_dir, paths, resume=True)
    return read_jsonl(run_dir / METRICS), read_json(run_dir / FINAL)


def _table(header: list[str], rows: list[list]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def training_step(model, images: torch.Tensor, labels: torch.Tensor, config, device: torch.device, precision: str,
                  side: int = 32):
    """Our training step as a call without arguments, for timing: a random batch of the uint8 images,
    augmented on the device and scaled to side pixels, one SGD step in `precision`."""
    import torch.nn.functional as F

    from pipeline.data.cifar10 import augment
    from pipeline.trained import prepare
    from pipeline.runtime import autocast, loss_scaler, optimizer_step

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)  # draws on the CPU, as in training
    scaler = loss_scaler(device, precision)

    def step():
        idx = torch.randint(0, len(labels), (config.batch_size,), generator=generator)
        x = prepare(augment(images[idx].to(device), generator, config.crop_padding), device, config.channels_last,
                    side)
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), labels[idx].to(device))
        optimizer_step(loss, optimizer, scaler)
    return step


def _baseline_rates(config, precision: str, paths: Paths) -> tuple[float, float]:
    """Images/s at 32 px of the plain recipe (fp32, NCHW, PIL transforms, DataLoader) and of ours, same batch
    size, timed in alternation (plain, ours, plain, ours) so that a drifting machine hurts both alike."""
    import torch.nn.functional as F
    import torchvision.transforms as T
    from PIL import Image

    from pipeline.data.cifar10 import MEAN, STD, load_cifar10
    from pipeline.trained import build_resnet
    from pipeline.runtime import steps_per_second

    device = pick_device(config.device)
    data = load_cifar10(paths.data, strict_counts=config.train_limit == 0 and config.test_limit == 0)
    images, labels = data.train_images.permute(0, 2, 3, 1).numpy(), data.train_labels
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])

    class PilDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return transform(Image.fromarray(images[i])), labels[i]

    loader = torch.utils.data.DataLoader(PilDataset(), batch_size=config.batch_size, shuffle=True, num_workers=2,
                                         drop_last=True, persistent_workers=True)
    batches = (batch for _ in iter(int, 1) for batch in loader)  # epoch after epoch, for as long as timed
    plain = build_resnet(dataclasses.replace(config, channels_last=False), device)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def plain_step():
        x, y = next(batches)
        loss = F.cross_entropy(plain(x.to(device)), y.to(device))
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    our_step = training_step(build_resnet(config, device), data.train_images, labels, config, device, precision)

    rates = {"plain": [], "ours": []}
    for _ in range(ROUNDS):
        for name, step in (("plain", plain_step), ("ours", our_step)):
            rate = steps_per_second(step, BASELINE_STEPS // ROUNDS, WARMUP_STEPS, device)
            rates[name].append(rate * config.batch_size)
    return sum(rates["plain"]) / ROUNDS, sum(rates["ours"]) / ROUNDS


def _ticking(step, bar):
    """step(), then one tick of the progress bar."""
    def ticked():
        step()
        bar.update(1)
    return ticked


def compile_rates(config, task) -> dict:
    """Our training step eager and under torch.compile (inductor), side by side at every image side of the
    run's schedule, on the training images of `task` (a ClsTask) in its precision: images/s of each (timed in
    alternation after a warm-up) and the seconds the compiled step's first calls took (compiling, once per
    side). From these, the training time of the whole schedule both ways, compile time included, and the
    share saved."""
    from pipeline.train.cls import resolution_at
    from pipeline.trained import build_resnet
    from pipeline.runtime import steps_per_second, synchronize

    device = task.device
    schedule = [resolution_at(epoch, config) for epoch in range(config.epochs)]
    sides = []
    per_side = WARMUP_STEPS + 2 * ROUNDS * (WARMUP_STEPS + BASELINE_STEPS // ROUNDS)  # steps timed or not
    bar = progress(len(set(schedule)) * per_side, "training steps, eager and compiled", "steps")
    for side in sorted(set(schedule)):
        eager, compiled = (_ticking(training_step(model, task.train_images, task.train_labels, config, device,
                                                  task.precision, side), bar)
                           for model in (build_resnet(config, device), torch.compile(build_resnet(config, device))))
        t0 = time.perf_counter()
        try:
            for _ in range(WARMUP_STEPS):
                compiled()
        except Exception as error:  # inductor needs a working C++ compiler (CPU) or Triton (GPU)
            raise PipelineError(f"torch.compile could not compile the training step on this machine at {side} px "
                                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                                "inductor needs a C++ compiler on the CPU and Triton on a GPU.") from error
        synchronize(device)
        compile_s = time.perf_counter() - t0
        rates = {"eager": [], "compiled": []}
        for _ in range(ROUNDS):
            for name, step in (("eager", eager), ("compiled", compiled)):
                rates[name].append(steps_per_second(step, BASELINE_STEPS // ROUNDS, WARMUP_STEPS, device)
                                   * config.batch_size)
        sides.append({"side": side, "epochs": schedule.count(side), "compile_s": round(compile_s, 1),
                      **{f"{k}_images_per_s": round(sum(v) / ROUNDS, 1) for k, v in rates.items()}})
    bar.close()
    per_epoch = task.steps_per_epoch * config.batch_size
    eager_s = sum(s["epochs"] * per_epoch / s["eager_images_per_s"] for s in sides)
    compiled_s = sum(s["compile_s"] + s["epochs"] * per_epoch / s["compiled_images_per_s"] for s in sides)
    return {"sides": sides, "train_images": per_epoch, "batch_size": config.batch_size, "precision": task.precision,
            "eager_s": round(eager_s, 1), "compiled_s": round(compiled_s, 1),
            "saved": round(1 - compiled_s / eager_s, 3)}


def images_until(records: list[dict], accuracy: float) -> tuple[int, float] | None:
    """Training images seen, and wall seconds, until validation accuracy first reached `accuracy`."""
    seen = 0
    for r in records:
        # Runs logged before epochs recorded their image count: images/s x seconds, to within an image.
        seen += r["images"] if "images" in r else round(r["images_per_s"] * r["train_s"])
        if r.get("val_accuracy", 0) >= accuracy:
            return seen, r["elapsed_s"]
    return None


def decode_speed(run_dir: Path, device: torch.device) -> dict:
    """The run's beam search over its test sources, timed on this machine both ways: batched with cached keys
    and values, and one sentence at a time re-decoding every prefix (the search before the cache), with how
    many outputs the two agree on. Written to the run's decode_speed.json."""
    from pipeline.scoring.decode import translate
    from pipeline.trained import load_trained

    config, model, src_tok, tgt_tok = load_trained(run_dir, device)
    sources = [d["source"] for d in read_json(run_dir / f"{TEST_OUTPUTS}.json", "test decodes of the run")]
    timed, outputs = {}, {}
    for way, reference in (("batched", False), ("one_at_a_time", True)):
        with progress(len(sources), f"beam search, {way.replace('_', ' ')}", "sentences") as bar, torch.no_grad():
            t0 = time.perf_counter()
            outputs[way] = translate(model, sources, src_tok, tgt_tok, config.max_len, device,
                                     config.beam_size, config.length_penalty, length_ratio=config.length_ratio,
                                     length_extra=config.length_extra, reference=reference, done=bar.update)
            timed[way] = time.perf_counter() - t0
    machine = machine_provenance(config.seed, device, "fp32")  # decoding runs in fp32
    result = {"sentences": len(sources), "beam_size": config.beam_size, "corpus": config.corpus,
              "batched_s": round(timed["batched"], 2), "one_at_a_time_s": round(timed["one_at_a_time"], 2),
              "speedup": round(timed["one_at_a_time"] / timed["batched"], 2),
              "same_outputs": sum(a == b for a, b in zip(outputs["batched"], outputs["one_at_a_time"])),
              **{k: v for k, v in machine.items() if k in MACHINE_FIELDS}}
    write_json(run_dir / DECODE_SPEED, result)
    return result


def step_speed(config, run_dir: Path, paths: Paths) -> dict:
    """compile_rates() in the precision a run of this config trains in here, with the machine it ran on;
    written to the run folder's step_speed.json."""
    from pipeline.train.cls import ClsTask

    task = ClsTask(config, paths)
    result = {**compile_rates(config, task),
              **{k: v for k, v in machine_provenance(config.seed, task.device, task.precision).items()
                 if k in MACHINE_FIELDS}}
    write_json(run_dir / STEP_SPEED, result)
    return result


def print_step_speed(speed: dict) -> None:
    print(_table(["image side", "epochs", "eager images/s", "compiled images/s", "compile s"],
                 [[s["side"], s["epochs"], s["eager_images_per_s"], s["compiled_images_per_s"], s["compile_s"]]
                  for s in speed["sides"]]))
    print(f"the schedule's training: {speed['eager_s'] / 60:.1f} min eager, {speed['compiled_s'] / 60:.1f} min "
          f"compiled (compile included): {100 * speed['saved']:+.1f}% saved; adopted only at 10% or more")


def bench(model: str, config, run_dir: Path, paths: Paths, speed_only: bool = False) -> None:
    if speed_only:
        if model != "cls":
            raise PipelineError("--speed_only times the ResNet's training step; the Transformer's benchmark "
                                "needs its trained run.")
        run_dir.mkdir(parents=True, exist_ok=True)
        print("timing our step eager and under torch.compile at each image side of the schedule ...")
        print_step_speed(step_speed(config, run_dir, paths))
        return
    records, final = _train(model, config, run_dir, paths)
    provenance = read_json(run_dir / PROVENANCE, "provenance file")
    print(f"machine: {provenance['device_name']} ({provenance['device']}), {provenance['threads']} threads, "
          f"flags that set the speed: {', '.join(provenance['cpu_flags']) or 'none of ' + ', '.join(SPEED_FLAGS)}")
    if model == "cls":
        layout = "channels_last" if config.channels_last else "NCHW"
        probe = provenance.get("probe_images_per_s")
        print(f"chosen: {provenance['precision']}, {layout}"
              + (f" (probe, images/s: {', '.join(f'{k} {v}' for k, v in probe.items())})" if probe else ""))
        rows = [[r["epoch"] + 1, r["resolution"], f"{r['train_s']:.0f}", f"{r['images_per_s']:.1f}",
                 f"{r.get('eval_s', 0):.0f}", f"{100 * r.get('val_accuracy', float('nan')):.2f}",
                 f"{r['elapsed_s'] / 60:.1f}"] for r in records]
        print(_table(["epoch", "pixels", "train s", "images/s", "val s", "val acc %", "elapsed min"], rows))
        reached = images_until(records, 0.80)
        print("validation accuracy first reached 80% after "
              + (f"{reached[0]:,} training images, {reached[1] / 60:.1f} min" if reached else "— (never)"))
        evaluation = sum(r.get("eval_s", 0) for r in records)
        print(f"validation took {evaluation:.0f} s of {final['train_wall_s']:.0f} s "
              f"({100 * evaluation / final['train_wall_s']:.1f}%)")
        print(f"test accuracy: {100 * final['test_accuracy']:.2f}% on {final['test_images']} images; "
              f"training wall time {final['train_wall_s'] / 60:.1f} min")
        print(f"\ntiming {BASELINE_STEPS} steps of batch {config.batch_size} at 32x32 for each recipe, alternating ...")
        plain, ours = _baseline_rates(config, provenance["precision"], paths)
        print(_table(["recipe", "images/s"], [
            ["plain: fp32, NCHW, PIL transforms, DataLoader", f"{plain:.1f}"],
            [f"ours: {layout}, {provenance['precision']}, batch augmentation on the device", f"{ours:.1f}"],
        ]))
        print(f"throughput ratio: {ours / plain:.2f}x")
        print("\ntiming our step eager and under torch.compile at each image side of the schedule ...")
        print_step_speed(step_speed(config, run_dir, paths))
    elif model == "mt":
        rows = [[r["epoch"] + 1, f"{r['train_s']:.1f}", f"{r['tokens_per_s']:.0f}", f"{r.get('val_loss', 0):.3f}",
                 f"{r.get('val_bleu', 0):.2f}"] for r in records]
        print(_table(["epoch", "wall s", "tokens/s", "val loss", "val BLEU"], rows))
        print(f"training wall time {final['train_wall_s'] / 60:.1f} min")
        print(f"test BLEU {final['test_bleu']:.2f} ± {final['test_bleu_ci95']}  ({final['bleu_signature']})")
        print(f"test chrF {final['test_chrf']:.2f}  ({final['chrf_signature']})")
        print(f"test TER  {final['test_ter']:.2f}  ({final['ter_signature']})")
        print(f"test BLEU on lower-cased text {final['test_bleu_lowercase']:.2f}  "
              f"({final['bleu_lowercase_signature']})")
        print(f"greedy BLEU {final['test_greedy_bleu']:.2f}; beam {config.beam_size} is what the scores above use")
        print(f"\ntiming beam search ({config.beam_size}) over the {final['test_sentences']} test sentences, batched "
              "and one sentence at a time ...")
        speed = decode_speed(run_dir, pick_device(config.device))
        print(_table(["beam search", "seconds"], [
            ["batched, cached keys and values", f"{speed['batched_s']:.1f}"],
            ["one sentence at a time, every prefix re-decoded", f"{speed['one_at_a_time_s']:.1f}"],
        ]))
        print(f"speed-up: {speed['speedup']:.1f}x; the two agree on {speed['same_outputs']} of {speed['sentences']} "
              f"outputs (written to {run_dir / DECODE_SPEED})")
    else:
        raise PipelineError(f"No benchmark for {model!r}.")
