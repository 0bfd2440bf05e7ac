"""Writes that survive a crash: durable atomic replacement, append-only logs."""

import os

import pytest

from pipeline import io
from pipeline.config import PipelineError


def test_atomic_write_flushes_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "fsync", fsync)
    monkeypatch.setattr(io.os, "replace", replace)
    target = tmp_path / "out" / "metrics.json"
    io.write_json(target, {"a": 1})
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert events[0][1].startswith(str(target.parent / ".metrics.json."))  # the temporary file's bytes
    assert events[2][1] == str(target.parent)  # then the folder's new entry
    assert io.read_json(target) == {"a": 1}
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "a.txt"
    io.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_a_torn_last_line_is_an_error_unless_resuming(tmp_path, capsys):
    path = tmp_path / "runs" / "cls" / "main" / "metrics.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"epoch": 0}\n{"epoch": 1, "lo')
    with pytest.raises(PipelineError, match="line 2, is not valid JSON"):
        io.read_jsonl(path)
    assert io.read_jsonl(path, drop_torn_tail=True) == [{"epoch": 0}]
    assert "dropped the unfinished last line" in capsys.readouterr().out
    path.write_text('{"epoch": 0}\n{"epoch": 1, "lo\n{"epoch": 2}\n')  # damage in the middle is never dropped
    with pytest.raises(PipelineError, match="line 2"):
        io.read_jsonl(path, drop_torn_tail=True)


def test_a_stage_file_without_what_its_reader_indexes_names_the_file_and_the_keys(tmp_path):
    path = tmp_path / "final.json"
    io.write_json(path, {"test_accuracy": 0.9})
    with pytest.raises(io.PipelineError, match=r"final\.json is not a test result as this version writes it: it "
                                               r"lacks train_wall_s\. Move it aside"):
        io.read_json(path, "test result", require=("train_wall_s",))
    io.write_json(path, [1, 2])
    with pytest.raises(io.PipelineError, match="lacks train_wall_s"):
        io.read_json(path, "test result", require=("train_wall_s",))
    io.write_json(path, {"train_wall_s": 1.0})
    assert io.read_json(path, "test result", require=("train_wall_s",)) == {"train_wall_s": 1.0}
