import os

import numpy as np
import pytest
from helpers import gradient, png_header_only, truncated_copy, write_dicom, write_image

from cxr_keras.data import verify
from cxr_keras.data.balance import BalanceError, class_weights, positive_weights
from cxr_keras.data.pipeline import make_dataset
from cxr_keras.data.sources import DataError, load_dataset


def _dataset_with_bad_files(root):
    good = [write_image(str(root / "A" / f"good{k}.png")) for k in range(3)]
    good.append(write_image(str(root / "B" / "good.jpg"), fmt="JPEG"))
    (root / "B" / "empty.png").write_bytes(b"")
    truncated_copy(write_image(str(root / "tmp" / "t.png"), np.random.default_rng(0).integers(0, 255, (64, 64),
                                                                                            dtype=np.uint8)),
                   str(root / "B" / "truncated.png"))
    truncated_copy(write_image(str(root / "tmp" / "t.jpg"), gradient(64, 64), fmt="JPEG"),
                   str(root / "B" / "truncated.jpg"), keep=0.6)
    (root / "B" / "notes.png").write_text("this is a text file with an image extension")
    (root / "B" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    png_header_only(str(root / "B" / "huge.png"), 30_000, 30_000)
    kept = [write_image(str(root / "B" / "cmyk.jpg"), np.dstack([gradient()] * 3), mode="CMYK", fmt="JPEG"),
            write_image(str(root / "B" / "rgba.png"), np.dstack([gradient()] * 3), mode="RGBA"),
            write_image(str(root / "B" / "palette.png"), gradient(), mode="P"),
            write_image(str(root / "B" / "gray16.png"), gradient(dtype=np.uint16, top=4095))]
    import shutil

    shutil.rmtree(root / "tmp")
    return good + kept


def test_bad_files_are_dropped_with_reasons_and_convertible_modes_kept(tmp_path):
    usable = _dataset_with_bad_files(tmp_path)
    table = load_dataset(str(tmp_path))
    assert sorted(table.paths) == sorted(usable)
    reasons = {d.path.rsplit("/", 1)[1]: d.reason for d in table.dropped}
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert reasons["truncated.png"].startswith("truncated or corrupt")
    assert reasons["truncated.jpg"].startswith("truncated or corrupt")
    assert reasons["notes.png"].startswith("not an image file")
    assert reasons["broken.dcm"].startswith("unreadable DICOM")
    assert "900,000,000 pixels" in reasons["huge.png"] and "downsample" in reasons["huge.png"]
    assert any("6 unreadable or oversized files dropped" in n for n in table.notes)
    # Training over what is left never meets a bad file.
    ds = make_dataset(table.paths, table.targets(), (32, 32), 4, training=True, augment="standard")
    assert sum(len(x) for x, _ in ds) == len(usable)


def test_pixel_limit_is_configurable(tmp_path):
    write_image(str(tmp_path / "A" / "a.png"), gradient(100, 100))
    write_image(str(tmp_path / "B" / "b.png"), gradient(10, 10))
    table = load_dataset(str(tmp_path), max_pixels=5_000)
    assert [d.path.rsplit("/", 1)[1] for d in table.dropped] == ["a.png"]
    assert "classes ['A'] have no usable images: training cannot learn them" in table.notes


def test_verification_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    paths = [write_image(str(tmp_path / c / "x.png")) for c in ("A", "B")]
    load_dataset(str(tmp_path))
    calls = []
    original = verify._check
    monkeypatch.setattr(verify, "_check", lambda p, m: calls.append(p) or original(p, m))
    load_dataset(str(tmp_path))
    assert calls == []
    (tmp_path / "A" / "x.png").write_bytes(b"")  # changed file: checked again, and now dropped
    table = load_dataset(str(tmp_path))
    assert calls == [paths[0]] and table.dropped[0].reason == "empty file (0 bytes)"


def test_csv_row_naming_a_missing_file_is_reported_by_name(tmp_path):
    write_image(str(tmp_path / "a.png"))
    write_image(str(tmp_path / "b.png"))
    (tmp_path / "labels.csv").write_text("path,label\na.png,x\nb.png,y\nghost.png,y\n")
    table = load_dataset(str(tmp_path))
    assert len(table) == 2
    dropped = [(d.path, d.reason) for d in table.dropped]
    assert dropped == [("ghost.png (CSV line 4)", "listed in labels.csv but not found")]


def test_label_outside_the_class_list_is_an_error_naming_the_file(tmp_path):
    write_image(str(tmp_path / "a.png"))
    write_image(str(tmp_path / "b.png"))
    (tmp_path / "labels.csv").write_text("path,label\na.png,normal\nb.png,pneumonai\n")
    with pytest.raises(DataError, match=r"\['pneumonai'\].*b\.png"):
        load_dataset(str(tmp_path), classes=["normal", "pneumonia"])


def test_empty_class_folder_is_an_error(tmp_path):
    write_image(str(tmp_path / "NORMAL" / "a.png"))
    (tmp_path / "PNEUMONIA").mkdir()
    (tmp_path / "PNEUMONIA" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="PNEUMONIA has no images"):
        load_dataset(str(tmp_path), layout="folder")


def test_single_class_dataset_is_an_error(tmp_path):
    write_image(str(tmp_path / "NORMAL" / "a.png"))
    with pytest.raises(DataError, match="single class"):
        load_dataset(str(tmp_path))


def test_missing_directory_and_unknown_layout(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="unknown layout 'foo'"):
        load_dataset(str(tmp_path), layout="foo")


def test_split_without_positives_cannot_be_weighted():
    with pytest.raises(BalanceError, match=r"no examples of \['PNEUMONIA'\]"):
        class_weights(np.zeros((5, 1)), ["NORMAL", "PNEUMONIA"])
    with pytest.raises(BalanceError, match=r"\['Hernia'\]"):
        positive_weights(np.array([[1, 0], [0, 0]]), ["Mass", "Hernia"])


def test_dicom_without_pixel_data_is_dropped(tmp_path):
    path = write_dicom(str(tmp_path / "A" / "ok.dcm"), gradient(dtype=np.uint16, top=4095))
    write_image(str(tmp_path / "B" / "b.png"))
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(str(tmp_path / "A" / "nopixels.dcm"))
    table = load_dataset(str(tmp_path))
    assert [d.reason for d in table.dropped] == ["unreadable DICOM: DICOM file has no pixel data"]


def test_a_file_rewritten_at_the_same_size_is_verified_again(tmp_path, monkeypatch):
    paths = [write_image(str(tmp_path / c / "x.png")) for c in ("A", "B")]
    load_dataset(str(tmp_path))
    size = os.path.getsize(paths[0])
    with open(paths[0], "r+b") as f:  # same size, new bytes: only the modification time tells
        f.seek(size // 2)
        f.write(b"\0" * (size - size // 2))
    stamp = os.stat(paths[0]).st_mtime_ns
    os.utime(paths[0], ns=(stamp + 10**9, stamp + 10**9))
    calls = []
    original = verify._check
    monkeypatch.setattr(verify, "_check", lambda p, m: calls.append(p) or original(p, m))
    table = load_dataset(str(tmp_path))
    assert calls == [paths[0]] and os.path.getsize(paths[0]) == size
    assert [d.path for d in table.dropped] == [paths[0]]


def test_a_device_behind_a_symlink_is_dropped_without_reading_it(tmp_path):
    for c in ("A", "B"):
        write_image(str(tmp_path / c / "x.png"))
    os.symlink("/dev/zero", tmp_path / "A" / "zero.png")
    table = load_dataset(str(tmp_path))
    assert [(os.path.basename(d.path), d.reason) for d in table.dropped] == [
        ("zero.png", "not a regular file (a device, pipe or folder)")]


def test_an_oversized_dicom_is_refused_from_its_header(tmp_path, monkeypatch):
    import pydicom

    write_image(str(tmp_path / "A" / "x.png"))
    write_image(str(tmp_path / "B" / "y.png"))
    write_dicom(str(tmp_path / "B" / "big.dcm"), gradient(40, 60, np.uint16, 4095))
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(lambda self: 1 / 0))  # never decoded
    table = load_dataset(str(tmp_path), max_pixels=2000)
    assert [d.reason for d in table.dropped] == [
        "DICOM image of 60x40 px is above the limit of 2,000 pixels (raise --max-pixels or downsample the file)"]


def test_a_cache_folder_that_cannot_be_written_only_means_nothing_is_remembered(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("CXR_KERAS_CACHE_DIR", str(tmp_path / "file" / "cache"))  # cannot be a folder
    for c in ("A", "B"):
        write_image(str(tmp_path / "data" / c / "x.png"))
    assert len(load_dataset(str(tmp_path / "data"))) == 2
