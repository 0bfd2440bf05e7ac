"""Training the Transformer on toy French->English: Adam with warm-up, label smoothing, length batches."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from pipeline.config import MtConfig, Paths
from pipeline.data.translation import (
    PAD_ID, Vocab, length_batches, load_pairs, pad_batch, split_pairs, with_all_references,
)
from pipeline.evaluate.bleu import corpus_bleu, corpus_scores
from pipeline.evaluate.decode import translate
from pipeline.models.transformer import Transformer, make_transformer
from pipeline.train.runner import epoch_generator, pick_device, progress, seed_everything


def lr_at(step: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to the peak, then decay with the inverse square root of the step."""
    step += 1
    return peak * min(step / warmup_steps, math.sqrt(warmup_steps / step))


def build_model(config: MtConfig, src_vocab: int, tgt_vocab: int, device: torch.device) -> Transformer:
    return make_transformer(src_vocab, tgt_vocab, config.d_model, config.heads, config.layers, config.d_ff,
                            config.dropout, config.tie_embeddings).to(device)


def sequence_loss(model: Transformer, src: torch.Tensor, tgt: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Mean label-smoothed cross-entropy of the next target token, padding ignored."""
    logits = model(src, tgt[:, :-1])  # (B, T-1, vocab)
    return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_ID,
                           label_smoothing=label_smoothing)


class MtTask:
    """The Transformer on a translation corpus, as the shared epoch loop drives it."""

    def __init__(self, config: MtConfig, paths: Paths, device: torch.device | None = None):
        self.config = config
        self.device = device or pick_device()
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_everything(config.seed)
        splits = split_pairs(load_pairs(config.corpus, config.corpus_limit), config.val_frac,
                             config.test_frac, config.seed)
        self.src_vocab = Vocab.build([s for s, _ in splits.train], config.min_freq)
        self.tgt_vocab = Vocab.build([t for _, t in splits.train], config.min_freq)
        self.train_ids = [(self.src_vocab.encode(s), self.tgt_vocab.encode(t)) for s, t in splits.train]
        self.val_pairs = splits.val
        self.val_sources, self.val_references = with_all_references(splits.val)
        self.test_sources, self.test_references = with_all_references(splits.test)
        self.model = build_model(config, len(self.src_vocab), len(self.tgt_vocab), self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(0.9, 0.98), eps=1e-9)
        self.step = 0

    def _tensors(self, ids: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        src = pad_batch([s for s, _ in ids], bos_eos=False).to(self.device)
        tgt = pad_batch([t for _, t in ids], bos_eos=True).to(self.device)
        return src, tgt

    def train_one_epoch(self, epoch: int) -> dict:
        config, model = self.config, self.model
        model.train()
        lengths = [(len(s), len(t)) for s, t in self.train_ids]
        batches = length_batches(lengths, config.tokens_per_batch, epoch_generator(config.seed, epoch))
        loss_sum = tokens = 0
        t0 = time.perf_counter()
        with progress(sum(s + t for s, t in lengths), f"mt epoch {epoch + 1}", "tok") as bar:
            for batch in batches:
                src, tgt = self._tensors([self.train_ids[i] for i in batch])
                lr = lr_at(self.step, config.warmup_steps, config.lr)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss = sequence_loss(model, src, tgt, config.label_smoothing)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
                self.optimizer.step()
                self.step += 1
                n = int((tgt[:, 1:] != PAD_ID).sum())
                loss_sum += loss.item() * n
                tokens += n
                real = int((src != PAD_ID).sum()) + n - len(batch)  # source + target words, <eos> excluded
                bar.update(real)
                bar.set_postfix(loss=f"{loss_sum / tokens:.3f}", lr=f"{lr:.2e}")
        seconds = time.perf_counter() - t0
        return {
            "train_loss": loss_sum / max(tokens, 1),
            "lr": lr,
            "tokens_per_s": bar.n / seconds,
            "train_s": round(seconds, 2),
        }

    def _translate(self, sources: list[str], beam_size: int = 0) -> list[str]:
        return translate(self.model, sources, self.src_vocab, self.tgt_vocab, self.config.max_len,
                         self.device, beam_size, self.config.length_penalty)

    @torch.no_grad()
    def evaluate(self) -> dict:
        if not self.val_pairs:
            return {}
        self.model.eval()
        ids = [(self.src_vocab.encode(s), self.tgt_vocab.encode(t)) for s, t in self.val_pairs]
        loss_sum = tokens = 0
        for start in range(0, len(ids), 256):
            src, tgt = self._tensors(ids[start:start + 256])
            n = int((tgt[:, 1:] != PAD_ID).sum())
            loss_sum += sequence_loss(self.model, src, tgt, self.config.label_smoothing).item() * n
            tokens += n
        hypotheses = self._translate(self.val_sources)
        return {"val_loss": loss_sum / tokens, "val_bleu": corpus_bleu(hypotheses, self.val_references)}

    def test(self) -> dict:
        greedy = self._translate(self.test_sources)
        t0 = time.perf_counter()
        beam = self._translate(self.test_sources, self.config.beam_size)
        scores = corpus_scores(beam, self.test_references)
        return {
            "test_bleu": scores["bleu"],
            "test_bleu_ci95": scores.get("bleu_ci95"),
            "test_chrf": scores["chrf"],
            "test_ter": scores["ter"],
            "test_greedy_bleu": corpus_bleu(greedy, self.test_references),
            "bleu_signature": scores["bleu_signature"],
            "chrf_signature": scores["chrf_signature"],
            "ter_signature": scores["ter_signature"],
            "test_sentences": len(self.test_sources),
            "beam_s": round(time.perf_counter() - t0, 2),
        }

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "src_vocab": self.src_vocab.itos,
            "tgt_vocab": self.tgt_vocab.itos,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
