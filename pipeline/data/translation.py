"""Translation pairs: the Tatoeba subsets or a user TSV, split without leaks, subword tokenizers, length batches."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import unicodedata
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.config import PipelineError
from pipeline.io import write_text

CORPUS = Path(__file__).parent / "corpus" / "fra-eng.txt.gz"  # lines "English<TAB>French"; see NOTICE
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)  # the tokenizers are trained with these ids

# The PyTorch seq2seq tutorial's toy task: short English sentences that start like these.
TOY_PREFIXES = (
    "i am ", "i m ", "he is", "he s ", "she is", "she s ", "you are", "you re ",
    "we are", "we re ", "they are", "they re ",
)
TOY_MAX_TOKENS = 10  # both sides strictly shorter, as in the tutorial
SHORT_MAX_WORDS = 10  # the harder subset: both sides at most this many words; "long" is every other pair
SUBSETS = ("toy", "short", "long")  # the named subsets of the shipped Tatoeba file


def normalize_text(text: str) -> str:
    """The tutorial's normalisation: lowercase, strip accents, split off . ! ? , and turn every other
    non-word character into a space. It defines the toy task's filter; the model never sees this text."""
    text = "".join(c for c in unicodedata.normalize("NFD", text.lower().strip()) if unicodedata.category(c) != "Mn")
    text = re.sub(r"([.!?,])", r" \1 ", text)
    text = re.sub(r"[^\w.!?,]+|_", " ", text)
    return " ".join(text.split())


def group_key(text: str) -> str:
    """What near-duplicates share: lower case, no accents, no punctuation, single spaces
    ("I'm ready." and "I'm ready!" both give "im ready")."""
    text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
    text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
    return " ".join(text.split())


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
                    raise PipelineError(
                        f"{path}, line {number}: not valid UTF-8 ({e.reason} at byte {e.start}).") from None
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
    """The file behind a corpus name: the shipped Tatoeba file for its named subsets, else the path given."""
    return CORPUS if corpus in SUBSETS else Path(corpus)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_pairs(corpus: str, limit: int = 0) -> list[tuple[str, str]]:
    """(source, target) pairs as written: (French, English) of the named Tatoeba subset, chosen by the
    tutorial's filter on the normalised text, or the two columns of a user TSV."""
    if corpus in SUBSETS:
        pairs = []
        for en, fr in read_tsv(CORPUS, 0, 1):
            fr_words, en_norm = normalize_text(fr).split(), normalize_text(en)
            short = len(fr_words) <= SHORT_MAX_WORDS and len(en_norm.split()) <= SHORT_MAX_WORDS
            if corpus == "toy":
                keep = len(fr_words) < TOY_MAX_TOKENS and len(en_norm.split()) < TOY_MAX_TOKENS \
                    and en_norm.startswith(TOY_PREFIXES)
            else:
                keep = short if corpus == "short" else not short
            if keep:
                pairs.append((fr, en))
    else:
        pairs = read_tsv(Path(corpus), 0, 1)
    pairs = [p for p in dict.fromkeys(pairs) if p[0] and p[1]]  # drop duplicates and empty sides
    if not pairs:
        raise PipelineError(f"The corpus {corpus!r} has no sentence pairs with both sides non-empty.")
    if limit:
        # Spread a limited corpus over the whole file, not just its first (shortest) lines.
        pairs = random.Random(0).sample(pairs, min(limit, len(pairs)))
    return pairs


@dataclass(frozen=True)
class Splits:
    train: list[tuple[str, str]]
    val: list[tuple[str, str]]
    test: list[tuple[str, str]]
    published: bool = False  # the files' own split (the test file scored as given), not one drawn here


# A published split's files in a folder given as --corpus (each may also end in .gz).
SPLIT_FILES = {"train": ("train.tsv",), "valid": ("valid.tsv", "dev.tsv"), "test": ("test.tsv",)}


def published_files(corpus: str, valid_corpus: str = "", test_corpus: str = "") -> dict[str, Path] | None:
    """The train, valid and test files of a published split: a folder named by --corpus that holds them, or
    --corpus (training) with --valid_corpus and --test_corpus; None for a corpus this project splits itself."""
    folder = Path(corpus) if corpus not in SUBSETS else None
    if folder is not None and folder.is_dir():
        files = {}
        for split, names in SPLIT_FILES.items():
            found = [folder / f"{name}{gz}" for name in names for gz in ("", ".gz")
                     if (folder / f"{name}{gz}").is_file()]
            if not found:
                raise PipelineError(
                    f"{folder} is a folder of a published split, but it has no {' or '.join(names)} (nor .gz): "
                    "it needs train.tsv, valid.tsv (or dev.tsv) and test.tsv, each of source<TAB>target lines.")
            files[split] = found[0]
        return files
    if valid_corpus or test_corpus:
        if not (valid_corpus and test_corpus) or folder is None:
            raise PipelineError("A published split takes three files: --corpus TRAIN.tsv --valid_corpus VALID.tsv "
                                "--test_corpus TEST.tsv (or --corpus FOLDER holding train.tsv, valid.tsv, test.tsv).")
        return {"train": folder, "valid": Path(valid_corpus), "test": Path(test_corpus)}
    return None


def read_published(files: dict[str, Path]) -> Splits:
    """A published split as given: training pairs without exact duplicates, validation and test pairs line by
    line, every test line kept (never filtered nor deduplicated: it is what published scores are computed on)."""
    train = [p for p in dict.fromkeys(read_tsv(files["train"], 0, 1)) if p[0] and p[1]]
    if not train:
        raise PipelineError(f"{files['train']} has no sentence pairs with both sides non-empty.")
    return Splits(train, read_tsv(files["valid"], 0, 1), read_tsv(files["test"], 0, 1), published=True)


def write_split(splits: Splits, folder: Path) -> dict[str, int]:
    """The three files of a split (train.tsv, valid.tsv, test.tsv: source<TAB>target lines, UTF-8), as a
    published split is given: to train on as one (--corpus FOLDER), or to score other systems on the same
    sentences. Pairs per file."""
    for name, pairs in (("training", splits.train), ("validation", splits.val), ("test", splits.test)):
        bad = next((p for p in pairs if any(c in side for side in p for c in "\t\r\n")), None)
        if bad is not None:
            raise PipelineError(f"A {name} pair holds a tab or a line break, which a split file of source<TAB>target "
                                f"lines cannot keep: {bad!r}. Nothing was written to {folder}.")
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, pairs in (("train", splits.train), ("valid", splits.val), ("test", splits.test)):
        file = SPLIT_FILES[split][0]
        write_text(folder / file, "".join(f"{source}\t{target}\n" for source, target in pairs))
        counts[file] = len(pairs)
    return counts


def split_overlap(splits: Splits) -> dict:
    """Validation and test pairs whose source or target is a near-duplicate (group_key) of a training one:
    counted, never removed (a split drawn here has none by construction)."""
    seen = {(side, group_key(text)) for pair in splits.train for side, text in enumerate(pair)}
    return {f"{name}_near_duplicates_of_train": sum(any((side, group_key(text)) in seen
                                                        for side, text in enumerate(pair)) for pair in pairs)
            for name, pairs in (("valid", splits.val), ("test", splits.test))}


def split_pairs(pairs: list[tuple[str, str]], val_frac: float, test_frac: float, seed: int) -> Splits:
    """Seeded split in which pairs whose sources or targets are the same up to case, accents, punctuation
    and spacing (group_key) always land together: no test sentence, nor a near-duplicate of it, is trained on."""
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[tuple[int, str], int] = {}
    for i, (src, tgt) in enumerate(pairs):
        for key in ((0, group_key(src)), (1, group_key(tgt))):
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
    """Unique sources in first-seen order, each with every target it has in `pairs`, as written."""
    references: dict[str, list[str]] = {}
    for src, tgt in pairs:
        references.setdefault(src, []).append(tgt)
    return list(references), list(references.values())


class Tokenizer:
    """A SentencePiece subword model: text as written <-> ids, with <pad> <bos> <eos> <unk> as ids 0-3.

    Unigram pieces with byte fallback, so any character of any script has ids (no <unk>), and the
    "identity" normalisation, so decode(encode(text)) gives the text back (spaces collapsed)."""

    def __init__(self, model_proto: bytes):
        import sentencepiece

        self.model_proto = model_proto
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, sentences: list[str], vocab_size: int) -> Tokenizer:
        """Learn pieces from `sentences` (the training split only); a small corpus gets fewer than vocab_size."""
        import io

        import sentencepiece

        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size, hard_vocab_limit=False,
                model_type="unigram", character_coverage=1.0, byte_fallback=True, normalization_rule_name="identity",
                pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID, num_threads=1, minloglevel=2,
                shuffle_input_sentence=False, input_sentence_size=0, max_sentence_length=1 << 16,
            )
        except RuntimeError as e:
            raise PipelineError(f"The subword tokenizer could not be trained on {len(sentences)} sentences with "
                                f"vocab_size {vocab_size} ({str(e).strip().splitlines()[-1]}).") from None
        return cls(model.getvalue())

    def __len__(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text)

    def decode(self, ids: list[int]) -> str:
        """Ids up to the first <eos> -> text, specials dropped."""
        kept = []
        for i in ids:
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                kept.append(i)
        return self.processor.decode(kept)

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.processor.id_to_piece(i) for i in ids]


def pad_batch(sequences: list[list[int]], bos_eos: bool) -> torch.Tensor:
    """(B, T) int64, padded with <pad>; targets get <bos> ... <eos>."""
    if bos_eos:
        sequences = [[BOS_ID, *s, EOS_ID] for s in sequences]
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), PAD_ID, dtype=torch.long)
    for row, s in enumerate(sequences):
        out[row, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def length_batches(lengths: list[tuple[int, int]], tokens_per_batch: int,
                   generator: torch.Generator) -> list[list[int]]:
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
