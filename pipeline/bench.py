"""Benchmarks: train the default profile, print its per-epoch table; for the ResNet, time a plain baseline."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from pipeline.config import CONFIG, FINAL, METRICS, PROVENANCE, Paths, PipelineError, changed_fields
from pipeline.io import read_json, read_jsonl
from pipeline.train import train
from pipeline.train.runner import SPEED_FLAGS

BASELINE_STEPS = 30  # timed steps per recipe, in ROUNDS alternating rounds, each after WARMUP_STEPS untimed ones
ROUNDS = 2
WARMUP_STEPS = 2


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


def _baseline_rates(config, precision: str, paths: Paths) -> tuple[float, float]:
    """Images/s at 32 px of the plain recipe (fp32, NCHW, PIL transforms, DataLoader) and of ours, same batch
    size, timed in alternation (plain, ours, plain, ours) so that a drifting machine hurts both alike."""
    import torch.nn.functional as F
    import torchvision.transforms as T
    from PIL import Image

    from pipeline.data.cifar10 import MEAN, STD, augment, load_cifar10
    from pipeline.train.cls import build_model, prepare
    from pipeline.train.runner import autocast, pick_device, steps_per_second

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
    plain = build_model(dataclasses.replace(config, channels_last=False), device)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def plain_step():
        x, y = next(batches)
        loss = F.cross_entropy(plain(x.to(device)), y.to(device))
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    ours = build_model(config, device)
    ours_opt = torch.optim.SGD(ours.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)

    def our_step():
        idx = torch.randint(0, len(labels), (config.batch_size,), generator=generator)
        x = prepare(augment(data.train_images[idx].to(device), generator, config.crop_padding), device,
                    config.channels_last)
        with autocast(device, precision):
            loss = F.cross_entropy(ours(x), labels[idx].to(device))
        ours_opt.zero_grad()
        loss.backward()
        ours_opt.step()

    rates = {"plain": [], "ours": []}
    for _ in range(ROUNDS):
        for name, step in (("plain", plain_step), ("ours", our_step)):
            rate = steps_per_second(step, BASELINE_STEPS // ROUNDS, WARMUP_STEPS, device)
            rates[name].append(rate * config.batch_size)
    return sum(rates["plain"]) / ROUNDS, sum(rates["ours"]) / ROUNDS


def images_until(records: list[dict], accuracy: float) -> tuple[int, float] | None:
    """Training images seen, and wall seconds, until validation accuracy first reached `accuracy`."""
    seen = 0
    for r in records:
        # Runs logged before epochs recorded their image count: images/s x seconds, to within an image.
        seen += r["images"] if "images" in r else round(r["images_per_s"] * r["train_s"])
        if r.get("val_accuracy", 0) >= accuracy:
            return seen, r["elapsed_s"]
    return None


def bench(model: str, config, run_dir: Path, paths: Paths) -> None:
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
    elif model == "mt":
        rows = [[r["epoch"] + 1, f"{r['train_s']:.1f}", f"{r['tokens_per_s']:.0f}", f"{r.get('val_loss', 0):.3f}",
                 f"{r.get('val_bleu', 0):.2f}"] for r in records]
        print(_table(["epoch", "wall s", "tokens/s", "val loss", "val BLEU"], rows))
        print(f"training wall time {final['train_wall_s'] / 60:.1f} min")
        print(f"test BLEU {final['test_bleu']:.2f} ± {final['test_bleu_ci95']}  ({final['bleu_signature']})")
        print(f"test chrF {final['test_chrf']:.2f}  ({final['chrf_signature']})")
        print(f"test TER  {final['test_ter']:.2f}  ({final['ter_signature']})")
        print(f"test BLEU on lower-cased text {final['test_bleu_lowercase']:.2f}  ({final['bleu_lowercase_signature']})")
        print(f"greedy BLEU {final['test_greedy_bleu']:.2f}; beam {config.beam_size} is what the scores above use")
    else:
        raise PipelineError(f"No benchmark for {model!r}.")
