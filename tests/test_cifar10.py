import pytest
import torch

from pipeline.config import PipelineError
from pipeline.data import cifar10
from tests.conftest import WritesMarker, cifar_members, write_cifar_archive


def test_loads_a_synthetic_archive_in_the_official_format(tmp_path, capsys):
    archive = write_cifar_archive(tmp_path / "c.tar.gz", cifar_members(per_batch=20))
    data = cifar10.load_cifar10(tmp_path / "data", archive=archive, strict_counts=False)
    assert data.train_images.shape == (100, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (20, 3, 32, 32)
    assert data.train_labels.dtype == torch.int64 and int(data.train_labels.max()) <= 9
    assert data.classes[0] == "airplane" and len(data.classes) == 10
    assert "not the official" in capsys.readouterr().out  # md5 differs: said in one line, and goes on


def test_official_counts_are_required_by_default(tmp_path):
    archive = write_cifar_archive(tmp_path / "c.tar.gz", cifar_members(per_batch=20))
    with pytest.raises(PipelineError, match="100 training and 20 test images"):
        cifar10.load_cifar10(tmp_path / "data", archive=archive)


def test_truncated_archive_names_the_file(tmp_path):
    archive = write_cifar_archive(tmp_path / "c.tar.gz", cifar_members(per_batch=200))
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(PipelineError, match=r"c\.tar\.gz.*truncated"):
        cifar10.load_cifar10(tmp_path / "data", archive=archive, strict_counts=False)


def test_missing_batch_is_named(tmp_path):
    members = cifar_members()
    del members["data_batch_3"]
    archive = write_cifar_archive(tmp_path / "c.tar.gz", members)
    with pytest.raises(PipelineError, match="missing cifar-10-batches-py/data_batch_3"):
        cifar10.load_cifar10(tmp_path / "data", archive=archive, strict_counts=False)


def test_labels_out_of_range_are_named(tmp_path):
    members = cifar_members()
    members["test_batch"][b"labels"][0] = 10
    archive = write_cifar_archive(tmp_path / "c.tar.gz", members)
    with pytest.raises(PipelineError, match="test_batch: labels must lie in 0-9"):
        cifar10.load_cifar10(tmp_path / "data", archive=archive, strict_counts=False)


def test_wrong_shape_is_named(tmp_path):
    members = cifar_members()
    members["data_batch_1"][b"data"] = members["data_batch_1"][b"data"][:, :100]
    archive = write_cifar_archive(tmp_path / "c.tar.gz", members)
    with pytest.raises(PipelineError, match=r"data_batch_1: b'data' should be a uint8 array of shape \(N, 3072\)"):
        cifar10.load_cifar10(tmp_path / "data", archive=archive, strict_counts=False)


def test_extracted_folder_comes_first(tmp_path):
    import tarfile

    archive = write_cifar_archive(tmp_path / "data" / cifar10.ARCHIVE_NAME, cifar_members(per_batch=20))
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "data")  # our own archive: no member leaves the folder
    archive.write_bytes(b"not an archive")  # would fail if it were read
    data = cifar10.load_cifar10(tmp_path / "data", strict_counts=False)
    assert data.source.endswith(cifar10.FOLDER_NAME)


def test_no_data_and_no_network_names_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR10_ARCHIVE", raising=False)

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", offline)
    with pytest.raises(PipelineError) as error:
        cifar10.load_cifar10(tmp_path / "data")
    message = str(error.value)
    assert cifar10.FOLDER_NAME in message and "CIFAR10_ARCHIVE" in message and "network" in message


def test_augment_keeps_shapes_and_is_seed_deterministic():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    a = cifar10.augment(images, torch.Generator().manual_seed(1))
    b = cifar10.augment(images, torch.Generator().manual_seed(1))
    c = cifar10.augment(images, torch.Generator().manual_seed(2))
    assert a.shape == images.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert cifar10.augment(images, torch.Generator().manual_seed(1), size=24).shape == (16, 3, 24, 24)


def test_augment_crops_and_flips_real_pixels():
    """With no padding a crop is the image itself, and a flip its mirror image."""
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = cifar10.augment(images, torch.Generator().manual_seed(0), padding=0)
    for original, augmented in zip(images, out):
        assert torch.equal(augmented, original) or torch.equal(augmented, original.flip(2))
    assert not torch.equal(out, images)


def test_validation_split_is_disjoint_seeded_and_may_be_empty():
    train, val = cifar10.split_train_val(100, 10, seed=3)
    assert len(val) == 10 and len(train) == 90 and not set(train.tolist()) & set(val.tolist())
    assert torch.equal(val, cifar10.split_train_val(100, 10, seed=3)[1])
    assert len(cifar10.split_train_val(100, 0, seed=3)[1]) == 0


def test_a_batch_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    members = cifar_members()
    members["data_batch_2"][b"batch_label"] = WritesMarker(marker)
    archive = write_cifar_archive(tmp_path / "c.tar.gz", members)
    with pytest.raises(PipelineError, match=r"data_batch_2 asks to load pathlib.*refused without running it"):
        cifar10.load_cifar10(tmp_path / "data", archive=archive, strict_counts=False)
    assert not marker.exists()


def test_a_bit_flipped_archive_gets_the_files_error(tmp_path):
    archive = write_cifar_archive(tmp_path / "c.tar.gz", cifar_members(per_batch=50))
    blob = bytearray(archive.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    archive.write_bytes(bytes(blob))
    with pytest.raises(PipelineError, match=r"c\.tar\.gz"):
        cifar10.load_cifar10(tmp_path / "data", archive=archive, strict_counts=False)
