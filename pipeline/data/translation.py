"""Tatoeba French->English: normalise, filter, split without leaks, tokenise, batch by length."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import unicodedata
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.config import PipelineError

CORPUS = Path(__file__).parent / "corpus" / "fra-eng.txt.gz"  # lines "English<TAB>French"; see NOTICE
PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)

# The PyTorch seq2seq tutorial's toy task: short English sentences that start like these.
TOY_PREFIXES = (
    "i am ", "i m ", "he is", "he s ", "she is", "she s ", "you are", "you re ",
    "we are", "we re ", "they are", "they re ",
)
TOY_MAX_TOKENS = 10  # both sides strictly shorter, as in the tutorial
SHORT_MAX_WORDS = 10  # the harder subset: both sides at most this many words


def normalize(text: str) -> str:
    """Lowercase, strip accents, split off . ! ? , and turn every other non-word character into a space."""
    text = "".join(c for c in unicodedata.normalize("NFD", text.lower().strip()) if unicodedata.category(c) != "Mn")
    text = re.sub(r"([.!?,])", r" \1 ", text)
    text = re.sub(r"[^\w.!?,]+|_", " ", text)
    return " ".join(text.split())


def tokenize(text: str) -> list[str]:
    """Word-level tokens of normalised text: words and the punctuation split off them."""
    return normalize(text).split()


def detokenize(tokens: list[str]) -> str:
    """Tokens back to text with punctuation attached, so sacrebleu sees ordinary sentences."""
    return re.sub(r" ([.!?,])", r"\1", " ".join(tokens))


def read_tsv(path: Path, source_column: int, target_column: int) -> list[tuple[str, str]]:
    """(source, target) pairs from a UTF-8 file of tab-separated lines (.gz allowed)."""
    if not path.is_file():
        raise PipelineError(f"Corpus file {path} does not exist.")
    opener = gzip.open if path.suffix == ".gz" else open
    pairs = []
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8").rstrip("\n\r")
                except UnicodeDecodeError as e:
                    raise PipelineError(f"{path}, line {number}: not valid UTF-8 ({e.reason} at byte {e.start}).") from None
                if not line.strip():
                    continue
                columns = line.split("\t")
                if len(columns) < 2:
                    raise PipelineError(
                        f"{path}, line {number}: expected source<TAB>target, found no tab in {line[:60]!r}."
                    )
                pairs.append((columns[source_column].strip(), columns[target_column].strip()))
    except (OSError, EOFError, zlib.error) as e:
        raise PipelineError(f"{path} cannot be read ({type(e).__name__}: {e}); it may be truncated or "
                            "corrupted. Copy it again.") from None
    if not pairs:
        raise PipelineError(f"{path} holds no sentence pairs.")
    return pairs


def corpus_path(corpus: str) -> Path:
    """The file behind a corpus name: the shipped Tatoeba file for "toy" and "short", else the path given."""
    return CORPUS if corpus in ("toy", "short") else Path(corpus)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_pairs(corpus: str, limit: int = 0, max_tokens: int = 0) -> list[tuple[str, str]]:
    """Normalised (French, English) pairs of the named subset, or (source, target) of a user TSV; pairs with
    a side longer than max_tokens tokens (if given) are dropped, and how many is printed."""
    if corpus in ("toy", "short"):
        english_french = read_tsv(CORPUS, 0, 1)
        pairs = [(normalize(fr), normalize(en)) for en, fr in english_french]
        if corpus == "toy":
            pairs = [
                (fr, en) for fr, en in pairs
                if len(fr.split()) < TOY_MAX_TOKENS and len(en.split()) < TOY_MAX_TOKENS
                and en.startswith(TOY_PREFIXES)
            ]
        else:
            pairs = [(fr, en) for fr, en in pairs
                     if len(fr.split()) <= SHORT_MAX_WORDS and len(en.split()) <= SHORT_MAX_WORDS]
    else:
        pairs = [(normalize(s), normalize(t)) for s, t in read_tsv(Path(corpus), 0, 1)]
    pairs = [p for p in dict.fromkeys(pairs) if p[0] and p[1]]  # drop duplicates and empty sides
    if max_tokens:
        kept = [(s, t) for s, t in pairs if len(s.split()) <= max_tokens and len(t.split()) <= max_tokens]
        if len(kept) < len(pairs):
            print(f"note: dropped {len(pairs) - len(kept)} of {len(pairs)} pairs of {corpus} with a side longer "
                  f"than max_tokens = {max_tokens} tokens.")
        pairs = kept
    if not pairs:
        raise PipelineError(f"The corpus {corpus!r} has no usable sentence pairs after normalisation"
                            f"{' and the length limit' if max_tokens else ''}.")
    if limit:
        # Spread a limited corpus over the whole file, not just its first (shortest) lines.
        pairs = random.Random(0).sample(pairs, min(limit, len(pairs)))
    return pairs


@dataclass(frozen=True)
class Splits:
    train: list[tuple[str, str]]
    val: list[tuple[str, str]]
    test: list[tuple[str, str]]


def split_pairs(pairs: list[tuple[str, str]], val_frac: float, test_frac: float, seed: int) -> Splits:
    """Seeded split in which pairs sharing a source or a target sentence always land together."""
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[tuple[int, str], int] = {}
    for i, (src, tgt) in enumerate(pairs):
        for key in ((0, src), (1, tgt)):
            j = first_seen.setdefault(key, i)
            parent[find(i)] = find(j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(pairs)):
        groups[find(i)].append(i)
    ordered = sorted(groups.values())
    random.Random(seed).shuffle(ordered)
    n_test, n_val = int(len(pairs) * test_frac), int(len(pairs) * val_frac)
    test, val, train = [], [], []
    for group in ordered:
        bucket = test if len(test) < n_test else val if len(val) < n_val else train
        bucket.extend(pairs[i] for i in group)
    return Splits(train, val, test)


def split_fingerprint(splits: Splits) -> str:
    """A short hash of which pairs landed in which split, in order: equal fingerprints, equal splits."""
    blob = json.dumps([splits.train, splits.val, splits.test], ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def with_all_references(pairs: list[tuple[str, str]]) -> tuple[list[str], list[list[str]]]:
    """Unique sources in first-seen order, each with every target it has in `pairs`, detokenised
    like the model's outputs so that sacrebleu compares ordinary text with ordinary text."""
    references: dict[str, list[str]] = {}
    for src, tgt in pairs:
        references.setdefault(src, []).append(detokenize(tgt.split()))
    return list(references), list(references.values())


class Vocab:
    """Token <-> id, with <pad> <bos> <eos> <unk> first."""

    def __init__(self, tokens: list[str]):
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, sentences: list[str], min_freq: int) -> Vocab:
        counts = Counter(token for s in sentences for token in s.split())
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls(SPECIALS + kept)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, sentence: str) -> list[int]:
        return [self.stoi.get(t, UNK_ID) for t in sentence.split()]

    def decode(self, ids: list[int]) -> list[str]:
        """Ids up to the first <eos>, without specials."""
        tokens = []
        for i in ids:
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                tokens.append(self.itos[i])
        return tokens


def pad_batch(sequences: list[list[int]], bos_eos: bool) -> torch.Tensor:
    """(B, T) int64, padded with <pad>; targets get <bos> ... <eos>."""
    if bos_eos:
        sequences = [[BOS_ID, *s, EOS_ID] for s in sequences]
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), PAD_ID, dtype=torch.long)
    for row, s in enumerate(sequences):
        out[row, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def padded_size(lengths: list[tuple[int, int]]) -> int:
    """Tokens in the padded (source, <bos> target <eos>) tensors of a batch of (source, target) lengths."""
    return len(lengths) * (max(s for s, _ in lengths) + max(t for _, t in lengths) + 2)


def length_batches(lengths: list[tuple[int, int]], tokens_per_batch: int, generator: torch.Generator) -> list[list[int]]:
    """Index batches of similar lengths whose padded source + target tensors hold at most tokens_per_batch
    tokens (a single pair longer than that gets a batch of its own)."""
    noise = torch.rand(len(lengths), generator=generator).tolist()
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i][0] + lengths[i][1] + noise[i]))
    batches, current, longest_src, longest_tgt = [], [], 0, 0
    for i in order:
        src, tgt = max(longest_src, lengths[i][0]), max(longest_tgt, lengths[i][1])
        if current and (len(current) + 1) * (src + tgt + 2) > tokens_per_batch:
            batches.append(current)
            current, src, tgt = [], lengths[i][0], lengths[i][1]
        current.append(i)
        longest_src, longest_tgt = src, tgt
    if current:
        batches.append(current)
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]
