"""Corrupted inputs, many at random: each must load or end in the project's error, never anything else.

A seeded loop of our own (no extra dependency): every case is reproducible from its number, and the
failure message names the case and the corruption."""

import gzip
import io
import pickle
import random
import tarfile

import numpy as np
import pytest

from pipeline.config import PipelineError
from pipeline.data import cifar10
from pipeline.data.translation import load_pairs
from tests.conftest import cifar_members

CIFAR_CASES = 120
TSV_CASES = 200


def _cifar_corruption(rng: random.Random, path):
    """Write one corrupted archive to path; return what was done to it."""
    members = cifar_members(per_batch=4, seed=rng.randrange(1000))
    name = rng.choice(sorted(members))
    kind = rng.choice(["truncate", "flip", "drop", "dtype", "shape", "labels", "label_type", "not_dict",
                       "meta", "pickle_bytes", "empty_member", "data_list"])
    if kind == "drop":
        del members[name]
    elif kind == "dtype" and name != cifar10.META:
        members[name][b"data"] = members[name][b"data"].astype(rng.choice([np.float32, np.int64, np.int8]))
    elif kind == "shape" and name != cifar10.META:
        members[name][b"data"] = members[name][b"data"].reshape(rng.choice([(2, 6144), (4, 32, 96), (12288,)]))
    elif kind == "labels" and name != cifar10.META:
        members[name][b"labels"][0] = rng.choice([-1, 10, 255, 10**12])
    elif kind == "label_type" and name != cifar10.META:
        members[name][b"labels"] = rng.choice([b"abcd", "abcd", [1.5] * 4, None, {1: 2}])
    elif kind == "not_dict":
        members[name] = rng.choice([[1, 2], "text", 3, None])
    elif kind == "meta":
        members[cifar10.META][b"label_names"] = rng.choice([[b"a"] * 3, None, [1] * 10, "ten"])
    elif kind == "data_list" and name != cifar10.META:
        members[name][b"data"] = members[name][b"data"].tolist()
    blob_of = {n: pickle.dumps(obj, protocol=rng.choice([2, 4, 5])) for n, obj in members.items()}
    if kind == "pickle_bytes":
        blob = bytearray(blob_of[name])
        for _ in range(rng.randint(1, 8)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        blob_of[name] = bytes(blob)
    if kind == "empty_member":
        blob_of[name] = b""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for n, blob in blob_of.items():
            info = tarfile.TarInfo(f"{cifar10.FOLDER_NAME}/{n}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    data = bytearray(buffer.getvalue())
    if kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "flip":
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return f"{kind} {name}"


def _tsv_corruption(rng: random.Random, path):
    """Write one corrupted corpus to path (plain or gzip); return what was done to it."""
    lines = [f"phrase {i} ici .\tsentence {i} here ." for i in range(30)]
    kind = rng.choice(["bad_utf8", "no_tab", "empty_lines", "long_line", "many_tabs", "nul", "only_tabs",
                       "truncate_gz", "flip_gz", "binary", "crlf", "bom"])
    raw = "\n".join(lines).encode()
    if kind == "bad_utf8":
        position = rng.randrange(len(raw))
        raw = raw[:position] + bytes([rng.choice([0xff, 0xc3, 0xe9, 0x80])]) + raw[position:]
    elif kind == "no_tab":
        lines[rng.randrange(len(lines))] = "no tab on this line"
        raw = "\n".join(lines).encode()
    elif kind == "empty_lines":
        raw = "\n\n".join(lines + ["", "   "]).encode()
    elif kind == "long_line":
        lines.append("mot " * rng.randint(100, 20000) + "\t" + "word " * rng.randint(1, 50))
        raw = "\n".join(lines).encode()
    elif kind == "many_tabs":
        lines[0] = "a\tb\tc\td"
        raw = "\n".join(lines).encode()
    elif kind == "nul":
        raw = raw.replace(b"ici", b"i\x00i", 3)
    elif kind == "only_tabs":
        raw = b"\t\n\t\t\n" * 5
    elif kind == "binary":
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 2000)))
    elif kind == "crlf":
        raw = raw.replace(b"\n", b"\r\n")
    elif kind == "bom":
        raw = b"\xef\xbb\xbf" + raw
    if kind in ("truncate_gz", "flip_gz") or rng.random() < 0.3:
        path = path.with_suffix(".tsv.gz")
        data = bytearray(gzip.compress(raw))
        if kind == "truncate_gz":
            data = data[:rng.randrange(len(data))]
        elif kind == "flip_gz":
            for _ in range(rng.randint(1, 10)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        raw = bytes(data)
    path.write_bytes(raw)
    return kind, path


@pytest.mark.parametrize("chunk", range(4))
def test_corrupted_cifar_archives_load_or_fail_clearly(tmp_path, chunk):
    for case in range(chunk * CIFAR_CASES // 4, (chunk + 1) * CIFAR_CASES // 4):
        rng = random.Random(case)
        path = tmp_path / f"case{case}.tar.gz"
        what = _cifar_corruption(rng, path)
        try:
            data = cifar10.load_cifar10(tmp_path / "data", archive=path, strict_counts=False)
        except PipelineError as e:
            assert str(path) in str(e), (case, what, str(e))
        except Exception as e:  # noqa: BLE001 - anything else is the bug this test looks for
            pytest.fail(f"case {case} ({what}): {type(e).__name__}: {e}")
        else:
            assert data.train_images.dtype.is_floating_point is False and int(data.train_labels.max()) <= 9


def test_corrupted_corpora_load_or_fail_clearly(tmp_path, capsys):
    for case in range(TSV_CASES):
        rng = random.Random(case)
        kind, path = _tsv_corruption(rng, tmp_path / f"case{case}.tsv")
        try:
            pairs = load_pairs(str(path), limit=rng.choice([0, 5]))
        except PipelineError as e:
            assert path.name in str(e), (case, kind, str(e))
        except Exception as e:  # noqa: BLE001 - anything else is the bug this test looks for
            pytest.fail(f"case {case} ({kind}, {path.name}): {type(e).__name__}: {e}")
        else:
            assert pairs and all(s and t for s, t in pairs)


def test_a_root_whose_assets_link_became_a_folder_is_named_not_overwritten(tmp_path):
    """A copy of a root that followed the docs/assets link has a real folder there: the pages say so in one
    paragraph and leave it as it is."""
    from pipeline.config import Paths
    from pipeline.report.pages import _mirror_handwritten

    paths = Paths(tmp_path)
    (paths.docs / "assets").mkdir(parents=True)
    (paths.docs / "assets" / "kept.png").write_bytes(b"png")
    with pytest.raises(PipelineError, match=r"docs/assets is a folder or file of its own.*move it aside") as caught:
        _mirror_handwritten(paths)
    assert "\n" not in str(caught.value) and (paths.docs / "assets" / "kept.png").read_bytes() == b"png"
