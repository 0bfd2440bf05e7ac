"""Training the Transformer on translation: Adam with warm-up, label smoothing, length batches, subword tokens."""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.config import ADAM_BETAS, ADAM_EPS, TEST_OUTPUTS, TEST_PREDICTIONS, MtConfig, Paths, PipelineError
from pipeline.data.translation import (
    PAD_ID, Tokenizer, length_batches, pad_batch, split_overlap, with_all_references,
)
from pipeline.scoring.bleu import bleu_tokenizer, corpus_bleu, test_scores
from pipeline.scoring.decode import translate
from pipeline.io import write_json
from pipeline.models.transformer import Transformer
from pipeline.train import distributed
from pipeline.runtime import autocast, loss_scaler, optimizer_step, progress, seed_everything, \
    steps_per_second
from pipeline.train.runner import LossTrace, Task, epoch_generator
from pipeline.trained import build_transformer, check_fingerprints, drop_long, load_splits


def lr_at(step: int, warmup_steps: int, peak: float, schedule: str, total_steps: int) -> float:
    """Linear warm-up to the peak, then decay with the inverse square root of the step, or ("linear") in a
    straight line that would reach zero one step after the last of total_steps."""
    step += 1
    if schedule == "linear":
        falling = max(0.0, (total_steps + 1 - step) / max(1, total_steps + 1 - warmup_steps))
        return peak * min(step / warmup_steps, falling)
    return peak * min(step / warmup_steps, math.sqrt(warmup_steps / step))


def sequence_loss(model: Transformer, src: torch.Tensor, tgt: torch.Tensor, label_smoothing: float,
                  reduction: str = "mean") -> torch.Tensor:
    """Label-smoothed cross-entropy of the next target token, padding ignored: mean or sum over tokens."""
    logits = model(src, tgt[:, :-1])  # (B, T-1, vocab)
    return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_ID,
                           label_smoothing=label_smoothing, reduction=reduction)


REPORT_EVERY = 20  # steps between progress-bar readings of the running loss (each one waits for the device)


def average_weights(states: list[dict]) -> dict:
    """The element-wise mean of several state dicts of one network (integer buffers from the last)."""
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[-1].items()}


PROBE_STEPS = 8  # the precision probe: timed training steps per precision, on the run's first batches


class MtTask(Task):
    """The Transformer on a translation corpus, as the shared epoch loop drives it."""

    def __init__(self, config: MtConfig, paths: Paths):
        super().__init__(config)
        seed_everything(config.seed)
        self.bleu_tokenize, note = bleu_tokenizer(config.tgt_lang)  # sacrebleu's choice for the target's script
        if note and self.world.main:
            print(note)
        splits, self.fingerprints = load_splits(config)
        self.splits = splits
        sources, targets = [s for s, _ in splits.train], [t for _, t in splits.train]
        if config.shared_vocab:
            shared = Tokenizer.train(sources + targets, config.vocab_size)
            self._use_tokenizers(shared, shared)
        else:
            self._use_tokenizers(Tokenizer.train(sources, config.vocab_size),
                                 Tokenizer.train(targets, config.vocab_size))
        self.choose_precision("mt")  # after the tokenizers: the probe times the run's first batches

    def _probe_rate(self, precision: str) -> float:
        """Training tokens/s of a throwaway copy of the network in `precision`, on the first batches of the run's
        first epoch; the run's random streams are left untouched."""
        batches = [self._tensors([self.train_ids[i] for i in b]) for b in self._batches(0)[:PROBE_STEPS]]
        with torch.random.fork_rng(devices=[]):
            model = build_transformer(self.config, len(self.src_tok), len(self.tgt_tok), self.device)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
            # Each batch once untimed (bf16 kernels are made for each new shape on first use), then timed.
            feed = itertools.cycle(batches)

            def step():
                src, tgt = next(feed)
                with autocast(self.device, precision):
                    loss = sequence_loss(model, src, tgt, self.config.label_smoothing)
                optimizer_step(loss, optimizer, loss_scaler(self.device, precision))

            tokens = sum(src.numel() + tgt.numel() for src, tgt in batches)
            return tokens / len(batches) * steps_per_second(step, len(batches), len(batches), self.device)

    def _use_tokenizers(self, src_tok: Tokenizer, tgt_tok: Tokenizer) -> None:
        """Everything that hangs on the subword models: the encoded splits, the network and its optimiser."""
        config, splits = self.config, self.splits
        self.src_tok, self.tgt_tok = src_tok, tgt_tok
        train, self.val_pairs = (drop_long(pairs, self.src_tok, self.tgt_tok, config.max_tokens, what)
                                 for pairs, what in ((splits.train, "training"), (splits.val, "validation")))
        self.train_pairs = len(train)
        self.train_ids = [(self.src_tok.encode(s), self.tgt_tok.encode(t)) for s, t in train]
        self.lengths = [(len(s), len(t)) for s, t in self.train_ids]
        self.total_steps = sum(len(self._batches(epoch)) for epoch in range(config.epochs))
        if self.total_steps == 0:
            raise PipelineError(
                f"No training step to take: {len(splits.train)} training pairs, of which {len(train)} have both sides "
                f"within --max_tokens {config.max_tokens} subword tokens. Raise --max_tokens, or give a corpus "
                "with training pairs.")
        self.val_sources, self.val_references = with_all_references(self.val_pairs)
        # The test pairs are never filtered: a source longer than the model's positions is cut when decoded,
        # and counted. A published test file is scored line by line, as given; a split drawn here scores
        # each source once, against all of its targets.
        self.test_sources, self.test_references = ([s for s, _ in splits.test], [[t] for _, t in splits.test]) \
            if splits.published else with_all_references(splits.test)
        self.model = build_transformer(config, len(self.src_tok), len(self.tgt_tok), self.device)
        self.net = distributed.wrap(self.model, self.world)  # DDP under torchrun: gradients averaged over ranks
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=ADAM_BETAS, eps=ADAM_EPS,
                                          fused=self.device.type in ("cpu", "cuda"))  # one kernel for all weights
        self.snapshots: list[dict] = []  # the weights at the end of the last average_last epochs, on the CPU
        self.scored_model = self.model

    def _batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches of pair indices: the same on every rank and for every call."""
        return length_batches(self.lengths, self.config.tokens_per_batch, epoch_generator(self.config.seed, epoch))

    def _tensors(self, ids: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        src = pad_batch([s for s, _ in ids], bos_eos=False).to(self.device)
        tgt = pad_batch([t for _, t in ids], bos_eos=True).to(self.device)
        return src, tgt

    def train_one_epoch(self, epoch: int) -> dict:
        config, model = self.config, self.model
        model.train()
        if self.world.distributed:  # dropout draws from the global stream: one per rank (one process keeps its own)
            torch.manual_seed(distributed.dropout_seed(config.seed, epoch, self.world))
        lengths, batches = self.lengths, self._batches(epoch)
        loss_sum = torch.zeros((), device=self.device)  # summed on the device, read every REPORT_EVERY steps
        tokens = 0
        trace = LossTrace(self.device, self.step)
        t0 = time.perf_counter()
        with progress(sum(s + t for s, t in lengths), f"mt epoch {epoch + 1}", "tok", self.world) as bar:
            for step, batch in enumerate(batches, 1):
                n = sum(lengths[i][1] for i in batch) + len(batch)  # predicted tokens: target words and <eos>
                # This rank's share of the batch; a batch with fewer pairs than ranks leaves a rank one pair
                # that counts zero, so every rank still takes part in the step.
                share = distributed.local_share(batch, self.world)
                weight = 1.0 if share else 0.0
                src, tgt = self._tensors([self.train_ids[i] for i in share or batch[:1]])
                lr = lr_at(self.step, config.warmup_steps, config.lr, config.lr_schedule, self.total_steps)
                # Summed over this rank's tokens and divided by the whole batch's: after DDP averages the
                # ranks' gradients, the step is that of the mean over every token of the batch.
                with autocast(self.device, self.precision):
                    local_sum = sequence_loss(self.net, src, tgt, config.label_smoothing, reduction="sum") * weight
                self.update(local_sum * (self.world.size / n), lr, config.clip_norm)
                trace.add(self.step, local_sum, n / self.world.size)  # n counts the whole batch's tokens
                self.step += 1
                loss_sum += local_sum.detach()
                tokens += n
                bar.update(sum(lengths[i][0] + lengths[i][1] for i in batch))  # source + target words
                if step % REPORT_EVERY == 0:
                    bar.set_postfix(loss=f"{loss_sum.item() * self.world.size / tokens:.3f}", lr=f"{lr:.2e}")
        seconds = time.perf_counter() - t0
        loss_sum = distributed.sum_over_ranks(loss_sum, self.world)
        self._average()
        return {
            "train_loss": loss_sum.item() / max(tokens, 1),
            "lr": lr,
            "tokens_per_s": bar.n / seconds,
            "train_s": round(seconds, 2),
            "loss_trace": trace.points(self.step, self.world),
        }

    def _average(self) -> None:
        """Keep this epoch's weights among the last average_last, and score their mean from now on."""
        if self.config.average_last <= 1:
            return
        self.snapshots = [*self.snapshots, {k: v.detach().to("cpu", copy=True) for k, v in
                                            self.model.state_dict().items()}][-self.config.average_last:]
        self.scored_model = build_transformer(self.config, len(self.src_tok), len(self.tgt_tok), self.device)
        self.scored_model.load_state_dict(average_weights(self.snapshots))

    def _translate(self, sources: list[str], beam_size: int = 0, batch_size: int = 128) -> list[str]:
        return translate(self.scored_model, sources, self.src_tok, self.tgt_tok, self.config.max_len, self.device,
                         beam_size, self.config.length_penalty, batch_size, length_ratio=self.config.length_ratio,
                         length_extra=self.config.length_extra)

    @torch.no_grad()
    def validate(self) -> dict:
        if not self.val_pairs:
            return {}
        self.scored_model.eval()
        ids = [(self.src_tok.encode(s), self.tgt_tok.encode(t)) for s, t in self.val_pairs]
        loss_sum, tokens = torch.zeros((), device=self.device), 0
        for start in range(0, len(ids), 256):
            src, tgt = self._tensors(ids[start:start + 256])
            n = sum(len(t) + 1 for _, t in ids[start:start + 256])
            loss_sum += sequence_loss(self.scored_model, src, tgt, self.config.label_smoothing) * n
            tokens += n
        hypotheses = self._translate(self.val_sources)
        return {"val_loss": loss_sum.item() / tokens, "val_bleu": corpus_bleu(hypotheses, self.val_references,
                                                                                     self.bleu_tokenize)}

    def test(self, run_dir: Path) -> dict:
        """Decode and score the test split once; the decodes are kept beside final.json for evaluation."""
        greedy = self._translate(self.test_sources)
        t0 = time.perf_counter()
        beam = self._translate(self.test_sources, self.config.beam_size)
        beam_s = time.perf_counter() - t0
        # The same search one sentence at a time, with no padding: equal to the batched outputs for a model that
        # masks source padding (a test checks it), different where padding reaches the attention.
        alone = self._translate(self.test_sources, self.config.beam_size, batch_size=1)
        decodes = [{"source": s, "references": r, "greedy": g, "beam": b}
                   for s, r, g, b in zip(self.test_sources, self.test_references, greedy, beam)]
        write_json(run_dir / f"{TEST_OUTPUTS}.json", decodes)
        write_json(run_dir / f"{TEST_PREDICTIONS}.json", [{k: d[k] for k in ("source", "references", "beam")}
                                                          for d in decodes])
        cut = sum(len(self.src_tok.encode(s)) > self.model.max_positions for s in self.test_sources)
        return {**test_scores(greedy, beam, self.test_references, self.bleu_tokenize), "train_pairs": self.train_pairs,
                "test_bleu_alone": corpus_bleu(alone, self.test_references, self.bleu_tokenize),
                "outputs_changed_by_padding": sum(a != b for a, b in zip(alone, beam)),
                "split": "published" if self.splits.published else "drawn", "test_sources_cut": cut,
                **split_overlap(self.splits),
                "beam_s": round(beam_s, 2)}

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "precision": self.precision,
            "scaler": self.scaler.state_dict(),
            **({"snapshots": self.snapshots, "scored_model": self.scored_model.state_dict()} if self.snapshots else {}),
            "src_tokenizer": self.src_tok.model_proto,
            "tgt_tokenizer": self.tgt_tok.model_proto,
            **self.fingerprints,
        }

    def load_state_dict(self, state: dict, checkpoint: Path) -> None:
        check_fingerprints(state, self.fingerprints, checkpoint, self.config.corpus)
        if (state["src_tokenizer"], state["tgt_tokenizer"]) != (self.src_tok.model_proto, self.tgt_tok.model_proto):
            # A resumed run reads with the subword models it was trained with, not ones learnt again today
            # (another sentencepiece version may learn other pieces from the same sentences).
            self._use_tokenizers(Tokenizer(state["src_tokenizer"]), Tokenizer(state["tgt_tokenizer"]))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.restore_precision(state)
        if state.get("snapshots"):
            self.snapshots = state["snapshots"][:-1]
            self._average()  # the last snapshot is the model's own weights, just loaded
