"""The Transformer's run: resume, fingerprints of its corpus and split, and the benchmark's guard."""

import dataclasses
import json

import pytest
import torch

from pipeline.config import Paths, PipelineError, make_config
from pipeline import runtime
from pipeline.train import runner
from pipeline.train.mt import MtTask
from tests.conftest import interrupt_at, write_tiny_corpus

DETERMINISTIC = ("train_loss", "val_loss", "val_bleu", "lr")


@pytest.fixture
def corpus_root(tmp_path):
    write_tiny_corpus(tmp_path / "tiny.tsv")
    return tmp_path


def _config(root, *extra):
    return make_config("mt", "smoke", ["--corpus", str(root / "tiny.tsv"), "--epochs", "3", *extra])


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _whole_and_interrupted(corpus_root, monkeypatch, *extra):
    """A run trained whole into whole/, and the same run stopped after two epochs in parts/."""
    paths, config = Paths(corpus_root), _config(corpus_root, *extra)
    whole = runner.run(MtTask(config, paths), "mt", corpus_root / "whole")
    interrupted = MtTask(config, paths)
    interrupt_at(monkeypatch, interrupted, 2)
    with pytest.raises(PipelineError, match="--resume"):
        runner.run(interrupted, "mt", corpus_root / "parts")
    assert len(_metrics(corpus_root / "parts")) == 2
    return paths, config, whole


def test_resume_reproduces_an_uninterrupted_run(corpus_root, monkeypatch):
    paths, config, whole = _whole_and_interrupted(corpus_root, monkeypatch)
    resumed = runner.run(MtTask(config, paths), "mt", corpus_root / "parts", resume=True)
    for a, b in zip(_metrics(corpus_root / "whole"), _metrics(corpus_root / "parts"), strict=True):
        for key in DETERMINISTIC:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert resumed["test_bleu"] == pytest.approx(whole["test_bleu"])
    outputs = json.loads((corpus_root / "parts" / "test_outputs.json").read_text())
    assert [d["beam"] for d in outputs] == [d["beam"] for d in
                                          json.loads((corpus_root / "whole" / "test_outputs.json").read_text())]


def test_a_changed_corpus_is_refused_when_resuming_and_evaluating(corpus_root):
    from pipeline.evaluate.mt import evaluate_mt

    paths, config = Paths(corpus_root), _config(corpus_root, "--epochs", "1")
    runner.run(MtTask(config, paths), "mt", paths.run("mt"))
    corpus = corpus_root / "tiny.tsv"
    corpus.write_text(corpus.read_text() + "nous sommes prets .\twe are ready .\n", encoding="utf-8")
    with pytest.raises(PipelineError, match=r"corpus_sha256 \w+, but .*tiny\.tsv now gives \w+"):
        evaluate_mt(paths)
    with pytest.raises(PipelineError, match="trained on a corpus file"):
        runner.run(MtTask(config, paths), "mt", paths.run("mt"), resume=True)


def test_bench_refuses_a_finished_run_of_another_config(corpus_root):
    from pipeline.bench import bench

    paths, config = Paths(corpus_root), _config(corpus_root, "--epochs", "1")
    runner.run(MtTask(config, paths), "mt", paths.run("mt"))
    with pytest.raises(PipelineError, match="other values of epochs, lr than asked for"):
        bench("mt", _config(corpus_root, "--epochs", "2", "--lr", "0.002"), paths.run("mt"), paths)


def test_a_resumed_run_reads_with_its_stored_subword_models(corpus_root, monkeypatch):
    """Today's tokenizer training gives other pieces (as another sentencepiece version might): a resumed run
    must read with the pieces stored in its checkpoint, and end where an uninterrupted run ends."""
    from pipeline.data.translation import Tokenizer

    paths, config, whole = _whole_and_interrupted(corpus_root, monkeypatch)
    stored = runtime.load_checkpoint(corpus_root / "parts" / "checkpoint.pt")["task"]

    learn = Tokenizer.train.__func__
    monkeypatch.setattr(Tokenizer, "train", classmethod(lambda cls, sentences, size: learn(cls, sentences[::2], size)))
    resumed = MtTask(config, paths)
    assert resumed.src_tok.model_proto != stored["src_tokenizer"]  # today's pieces really are other ones
    final = runner.run(resumed, "mt", corpus_root / "parts", resume=True)
    assert resumed.src_tok.model_proto == stored["src_tokenizer"]
    assert resumed.tgt_tok.model_proto == stored["tgt_tokenizer"]
    assert final["test_bleu"] == pytest.approx(whole["test_bleu"])


def _published(folder, long_line=True):
    """A published split made from the tiny corpus: test lines include a repeated source and one very long one."""
    lines = (folder.parent / "tiny.tsv").read_text(encoding="utf-8").splitlines()
    folder.mkdir()
    (folder / "train.tsv").write_text("\n".join(lines[:100]) + "\n", encoding="utf-8")
    (folder / "valid.tsv").write_text("\n".join(lines[100:120]) + "\n", encoding="utf-8")
    test = lines[120:135] + [lines[0], lines[120]]  # one near-duplicate of a training pair; a repeated line
    if long_line:
        test.append(" ".join(["je suis tres grand"] * 40) + " .\t" + " ".join(["i am very tall"] * 40) + " .")
    (folder / "test.tsv").write_text("\n".join(test) + "\n", encoding="utf-8")
    return len(test)


def test_a_published_split_is_used_as_given_and_every_test_line_is_scored(corpus_root):
    lines = _published(corpus_root / "split")
    paths = Paths(corpus_root)
    config = make_config("mt", "smoke", ["--corpus", str(corpus_root / "split"), "--epochs", "1"])
    final = runner.run(MtTask(config, paths), "mt", corpus_root / "published")
    assert final["split"] == "published" and final["test_sentences"] == lines  # every line, the long one too
    assert final["test_sources_cut"] == 1 and final["test_near_duplicates_of_train"] >= 1
    outputs = json.loads((corpus_root / "published" / "test_outputs.json").read_text())
    assert len(outputs) == lines and all(len(d["references"]) == 1 for d in outputs)
    # The same split named file by file gives the same run.
    files = make_config("mt", "smoke", ["--corpus", str(corpus_root / "split" / "train.tsv"), "--epochs", "1",
                                        "--valid_corpus", str(corpus_root / "split" / "valid.tsv"),
                                        "--test_corpus", str(corpus_root / "split" / "test.tsv")])
    again = runner.run(MtTask(files, paths), "mt", corpus_root / "files")
    assert again["test_bleu"] == pytest.approx(final["test_bleu"])


def test_a_drawn_split_written_as_three_files_reads_back_as_the_same_published_split(corpus_root, capsys):
    from pipeline.__main__ import main
    from pipeline.data.translation import Splits, write_split
    from pipeline.trained import load_splits

    drawn, _ = load_splits(_config(corpus_root, "--seed", "3"))
    assert main(["split", str(corpus_root / "split"), "--corpus", str(corpus_root / "tiny.tsv"), "--seed", "3",
                 "--profile", "smoke"]) == 0
    assert f"{len(drawn.test)} test.tsv pairs" in capsys.readouterr().out
    given, _ = load_splits(make_config("mt", "smoke", ["--corpus", str(corpus_root / "split")]))
    assert given.published and (given.train, given.val, given.test) == (drawn.train, drawn.val, drawn.test)
    with pytest.raises(PipelineError, match=r"tab or a line break.*'je\\tsuis'.*Nothing was written"):
        write_split(Splits([("je\tsuis", "i am")], [], []), corpus_root / "bad")
    assert not (corpus_root / "bad").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda folder: (folder / "valid.tsv").unlink(), r"split is a folder of a published split, but it has no "
                                                     r"valid\.tsv or dev\.tsv"),
    (lambda folder: (folder / "test.tsv").write_text("no tab here\n"),
     r"test\.tsv, line 1: expected source<TAB>target"),
    (lambda folder: (folder / "train.tsv").write_bytes(b"\xff\xfe\tbad\n"), r"train\.tsv, line 1: not valid UTF-8"),
])
def test_a_split_folder_with_a_missing_or_malformed_file_names_it(corpus_root, damage, message):
    _published(corpus_root / "split", long_line=False)
    damage(corpus_root / "split")
    config = make_config("mt", "smoke", ["--corpus", str(corpus_root / "split")])
    with pytest.raises(PipelineError, match=message):
        MtTask(config, Paths(corpus_root))


def test_bench_times_beam_search_both_ways_and_finds_them_agree(corpus_root, capsys):
    from pipeline.bench import bench
    from pipeline.compare.benchmarks import speed_measurements

    paths, config = Paths(corpus_root), _config(corpus_root, "--epochs", "1")
    final = runner.run(MtTask(config, paths), "mt", paths.run("mt"))
    bench("mt", config, paths.run("mt"), paths)
    speed = json.loads((paths.run("mt") / "decode_speed.json").read_text())
    assert speed["sentences"] == final["test_sentences"] and speed["same_outputs"] == speed["sentences"]
    assert speed["batched_s"] > 0 and speed["one_at_a_time_s"] > 0 and speed["cpu_vendor"]
    assert f"agree on {speed['sentences']} of {speed['sentences']} outputs" in capsys.readouterr().out
    assert speed_measurements(paths) == [{"kind": "decode", "model": "mt", "name": "main", **speed}]


def test_averaged_weights_are_scored_kept_in_the_checkpoint_and_survive_a_resume(corpus_root, monkeypatch):
    from pipeline.train.mt import average_weights

    paths, config, _ = _whole_and_interrupted(corpus_root, monkeypatch, "--average_last", "2")
    runner.run(MtTask(config, paths), "mt", corpus_root / "parts", resume=True)
    for a, b in zip(_metrics(corpus_root / "whole"), _metrics(corpus_root / "parts"), strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    state = runtime.load_checkpoint(corpus_root / "whole" / "checkpoint.pt")["task"]
    assert len(state["snapshots"]) == 2
    assert all(torch.equal(state["snapshots"][-1][k].cpu(), v.cpu()) for k, v in state["model"].items())
    averaged = average_weights(state["snapshots"])
    assert all(torch.allclose(state["scored_model"][k].cpu(), v) for k, v in averaged.items())
    assert not all(torch.equal(averaged[k], v.cpu()) for k, v in state["model"].items())
    # Without averaging, the first epoch scores the same weights, and the later ones others.
    runner.run(MtTask(_config(corpus_root), paths), "mt", corpus_root / "plain")
    plain_epochs, averaged_epochs = _metrics(corpus_root / "plain"), _metrics(corpus_root / "whole")
    assert plain_epochs[0]["val_loss"] == pytest.approx(averaged_epochs[0]["val_loss"], rel=1e-6)
    assert plain_epochs[-1]["val_loss"] != pytest.approx(averaged_epochs[-1]["val_loss"], rel=1e-6)


def test_the_linear_schedule_falls_to_zero_after_the_last_step_of_the_last_epoch(corpus_root):
    from pipeline.train.mt import lr_at

    config = _config(corpus_root, "--lr_schedule", "linear", "--warmup_steps", "3")
    task = MtTask(config, Paths(corpus_root))
    runner.run(task, "mt", corpus_root / "linear")
    assert task.step == task.total_steps > config.warmup_steps  # every epoch's batches counted ahead
    lrs = [lr_at(s, config.warmup_steps, config.lr, "linear", task.total_steps) for s in range(task.total_steps)]
    assert lrs.index(max(lrs)) == config.warmup_steps - 1 and max(lrs) == pytest.approx(config.lr)
    assert all(a > b for a, b in zip(lrs[config.warmup_steps - 1:], lrs[config.warmup_steps:]))
    assert lrs[-1] == pytest.approx(config.lr / (task.total_steps + 1 - config.warmup_steps))
    assert _metrics(corpus_root / "linear")[-1]["lr"] == pytest.approx(lrs[-1])


def test_a_shared_vocabulary_is_one_subword_model_and_one_table_and_survives_loading(corpus_root):
    from pipeline.data.translation import Tokenizer
    from pipeline.trained import load_trained

    paths = Paths(corpus_root)
    config = make_config("mt", "smoke", ["--corpus", str(corpus_root / "tiny.tsv"), "--epochs", "1",
                                         "--shared_vocab", "true"])
    task = MtTask(config, paths)
    assert task.src_tok is task.tgt_tok
    both = [s for s, _ in task.splits.train] + [t for _, t in task.splits.train]
    assert task.src_tok.model_proto == Tokenizer.train(both, config.vocab_size).model_proto  # learnt on both sides
    assert task.model.src_embed.lookup.weight is task.model.tgt_embed.lookup.weight is task.model.generator.weight
    runner.run(task, "mt", corpus_root / "shared")
    _, model, src_tok, tgt_tok = load_trained(corpus_root / "shared", torch.device("cpu"))
    assert src_tok.model_proto == tgt_tok.model_proto
    assert model.src_embed.lookup.weight is model.tgt_embed.lookup.weight
    assert torch.equal(model.src_embed.lookup.weight, task.model.tgt_embed.lookup.weight.detach().cpu())


def test_a_run_saved_before_lr_schedule_existed_reads_as_the_inverse_square_root_schedule_it_trained_with():
    from pipeline.config import config_from_dict, make_config

    assert make_config("mt", "full", {}).lr_schedule == "linear"  # the default since confirm-schedule-mt
    saved = dataclasses.asdict(make_config("mt", "full", {}))
    del saved["lr_schedule"]  # a config.json written before the field existed
    assert config_from_dict("mt", saved).lr_schedule == "inverse_sqrt"
    assert config_from_dict("mt", {**saved, "lr_schedule": "linear"}).lr_schedule == "linear"
    del saved["precision"]  # nor the precision: the Transformer trained in fp32 before it had the option
    assert config_from_dict("mt", saved).precision == "fp32" and make_config("mt", "full", {}).precision == "auto"


def test_the_transformer_trains_and_resumes_in_the_precision_chosen_for_it(corpus_root, monkeypatch):
    """bf16 changes the training arithmetic (the losses differ from fp32's), is recorded, and a resumed run goes
    on in it whatever would be chosen today; the Transformer's probe is recorded apart from the ResNet's."""
    assert runtime.machine_key("mt") != runtime.machine_key("cls")
    paths, config = Paths(corpus_root), _config(corpus_root)
    runner.run(MtTask(config, paths), "mt", corpus_root / "fp32")
    monkeypatch.setattr(runner, "resolve_precision", lambda *args, **kwargs: ("bf16", {}))
    bf16 = MtTask(config, paths)
    interrupt_at(monkeypatch, bf16, 1)
    with pytest.raises(PipelineError, match="--resume"):
        runner.run(bf16, "mt", corpus_root / "bf16")
    stored = runtime.load_checkpoint(corpus_root / "bf16" / "checkpoint.pt")["task"]
    assert stored["precision"] == "bf16"
    assert _metrics(corpus_root / "bf16")[0]["train_loss"] != _metrics(corpus_root / "fp32")[0]["train_loss"]
    monkeypatch.setattr(runner, "resolve_precision", lambda *args, **kwargs: ("fp32", {}))
    resumed = MtTask(config, paths)
    resumed.load_state_dict(stored, corpus_root / "bf16" / "checkpoint.pt")
    assert resumed.precision == "bf16"
    assert MtTask(config, paths)._probe_rate("fp32") > 0


def test_the_decoding_grid_decodes_the_validation_sentences_the_run_was_validated_on(corpus_root, monkeypatch):
    from pipeline.evaluate import decoding

    paths = Paths(corpus_root)
    task = MtTask(_config(corpus_root, "--epochs", "1"), paths)
    runner.run(task, "mt", paths.run("mt"))
    record = decoding.decode_validation(paths.run("mt"), [(0, 0.0), (2, 0.6)])
    assert set(record["settings"]) == {"greedy", "beam 2, alpha 0.6"}
    assert (record["sources"], record["references"]) == (task.val_sources, task.val_references)
    # Greedy, as validation decodes while training: the same BLEU as the run's last epoch logged.
    assert record["settings"]["greedy"]["val_bleu"] == _metrics(paths.run("mt"))[-1]["val_bleu"]
    assert len(record["settings"]["beam 2, alpha 0.6"]["hypotheses"]) == len(record["sources"])
    calls = []
    real = decoding.translate
    monkeypatch.setattr(decoding, "translate", lambda *a, **k: calls.append(a[6:8]) or real(*a, **k))
    record = decoding.decode_validation(paths.run("mt"), [(0, 0.0), (2, 0.6), (2, 1.0)])
    assert calls == [(2, 1.0)] and len(record["settings"]) == 3  # only the setting not decoded before
    (paths.run("mt") / "checkpoint.pt").unlink()
    with pytest.raises(PipelineError, match=r"main/checkpoint\.pt is missing: the decoding experiment"):
        decoding.decode_validation(paths.run("mt"), [(4, 0.6)])


def test_a_run_with_no_training_step_is_refused_in_one_clear_line(corpus_root):
    """--max_tokens that drops every training pair leaves nothing to train: a PipelineError, not a ZeroDivisionError."""
    message = r"No training step to take: \d+ training pairs, of which 0 .*--max_tokens 1"
    with pytest.raises(PipelineError, match=message):
        MtTask(_config(corpus_root, "--max_tokens", "1"), Paths(corpus_root))
