"""Data folders as a hostile reading finds them (issue 26): what used to train on wrong labels without a word is
refused or folded with a line that says so; files that are not what their names say are read or named."""

import os

import numpy as np
import pytest
from helpers import gradient, write_dicom, write_image
from PIL import Image

from cxr_keras.data import verify
from cxr_keras.data.copies import find_copies, perceptual_hash
from cxr_keras.data.image_io import load_gray, read_bytes, read_gray
from cxr_keras.data.records import DataError
from cxr_keras.data.sources import load_dataset
from cxr_keras.data.splits import SplitError, check_classes_in_splits, split_table


def _noise(seed, size=48):
    return np.random.default_rng(seed).integers(0, 256, (size, size)).astype(np.uint8)


def _film(seed, size=48):
    """A smooth random image, as films are at low frequencies (noise would change its hash with any resize)."""
    coarse = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8)).astype(np.uint8))
    return np.asarray(coarse.resize((size, size), Image.BILINEAR))


def _csv_data(root, header, rows, names=None):
    for k, name in enumerate(names or [r.split(",")[0] for r in rows]):
        write_image(str(root / name), _noise(k))
    (root / "labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return str(root / "labels.csv")


# row 1
def test_a_csv_naming_the_label_column_twice_is_refused(tmp_path):
    csv_path = _csv_data(tmp_path, "path,label,label", ["a.png,NORMAL,PNEUMONIA", "b.png,PNEUMONIA,NORMAL"])
    with pytest.raises(DataError, match="the header names column 'label' 2 times"):
        load_dataset(str(tmp_path), csv_path=csv_path)


# row 2
def test_labels_that_differ_in_case_or_spacing_are_one_class_said_once(tmp_path):
    rows = ["a.png,NORMAL", "b.png,Normal", "c.png,normal ", "d.png,PNEUMONIA", "e.png,pneumonia", "f.png,NORMAL"]
    csv_path = _csv_data(tmp_path, "path,label", rows)
    table = load_dataset(str(tmp_path), csv_path=csv_path)
    assert table.classes == ["NORMAL", "PNEUMONIA"] and table.task == "binary"
    assert table.class_counts() == {"NORMAL": 4, "PNEUMONIA": 2}
    fold = next(n for n in table.notes if "differ only in case" in n)
    assert "'Normal' (1) -> 'NORMAL'" in fold and "'pneumonia' (1) -> 'PNEUMONIA'" in fold
    assert "--keep-label-case" in fold
    kept = load_dataset(str(tmp_path), csv_path=csv_path, keep_label_case=True)
    assert kept.classes == ["NORMAL", "Normal", "PNEUMONIA", "normal", "pneumonia"]


def test_class_folders_that_differ_in_case_are_one_class(tmp_path):
    for k, folder in enumerate(["NORMAL", "normal", "PNEUMONIA"]):
        for i in range(2):
            write_image(str(tmp_path / folder / f"{k}{i}.png"), _noise(10 * k + i))
    table = load_dataset(str(tmp_path))
    assert table.classes == ["NORMAL", "PNEUMONIA"] and table.class_counts() == {"NORMAL": 4, "PNEUMONIA": 2}


# row 3
def test_a_bare_file_name_found_in_two_folders_is_ambiguous(tmp_path):
    write_image(str(tmp_path / "NORMAL" / "x.png"), _noise(1))
    write_image(str(tmp_path / "PNEUMONIA" / "x.png"), _noise(2))
    write_image(str(tmp_path / "PNEUMONIA" / "y.png"), _noise(3))
    (tmp_path / "labels.csv").write_text("path,label\nx.png,NORMAL\ny.png,PNEUMONIA\n")
    with pytest.raises(DataError, match=r"line 2: x.png is ambiguous, 2 files .* \(NORMAL/x.png, PNEUMONIA/x.png\)"):
        load_dataset(str(tmp_path), csv_path=str(tmp_path / "labels.csv"))


# row 4
def test_byte_identical_copies_under_two_classes_are_refused_or_dropped(tmp_path):
    for k in range(4):
        write_image(str(tmp_path / "NORMAL" / f"n{k}.png"), _noise(k))
        write_image(str(tmp_path / "PNEUMONIA" / f"p{k}.png"), _noise(100 + k))
    write_image(str(tmp_path / "PNEUMONIA" / "copy.png"), _noise(0))  # n0.png's bytes, another label
    with pytest.raises(DataError, match=r"n0.png \(NORMAL\) and .*copy.png \(PNEUMONIA\) are the same file"):
        load_dataset(str(tmp_path))
    table = load_dataset(str(tmp_path), copy_conflicts="drop")
    assert len(table) == 7 and not any(p.endswith(("n0.png", "copy.png")) for p in table.paths)
    reasons = {os.path.basename(d.path): d.reason for d in table.dropped}
    assert set(reasons) == {"n0.png", "copy.png"} and "byte-identical copy of" in reasons["copy.png"]


def test_copies_under_one_label_share_a_split_group_and_the_report_lists_them(tmp_path):
    from cxr_keras.data.report import format_report

    for k in range(12):
        for cls in ("NORMAL", "PNEUMONIA"):
            write_image(str(tmp_path / cls / f"patient{cls[0]}{k:02d}_0.png"), _film(k + (50 if cls[0] == "P" else 0)))
    Image.fromarray(_film(3)).save(tmp_path / "NORMAL" / "patientX99_0.jpg", quality=85)  # re-encoded copy
    write_image(str(tmp_path / "NORMAL" / "patientY98_0.png"), _film(5))  # identical bytes, another patient
    table = load_dataset(str(tmp_path))
    groups = table.group_ids()
    position = {os.path.basename(p): g for p, g in zip(table.paths, groups)}
    assert position["patientN03_0.png"] == position["patientX99_0.jpg"]
    assert position["patientN05_0.png"] == position["patientY98_0.png"]
    assert len(set(groups)) == 24  # 26 files, two joined to a copy
    for seed in range(5):
        split = split_table(table, (0.5, 0.25, 0.25), seed=seed)
        where = {os.path.basename(p): s for p, s in zip(split.paths, split.splits)}
        assert where["patientN03_0.png"] == where["patientX99_0.jpg"]
        assert where["patientN05_0.png"] == where["patientY98_0.png"]
    report = format_report(table)
    assert "Copies: 2 groups" in report and "patientY98_0.png" in report


def test_copies_across_the_datas_own_split_are_a_warning(tmp_path):
    for s, split in enumerate(("train", "val", "test")):
        for c, cls in enumerate(("NORMAL", "PNEUMONIA")):
            for k in range(3):
                write_image(str(tmp_path / split / cls / f"{split}{cls}{k}.png"), _noise(100 * s + 10 * c + k))
    write_image(str(tmp_path / "test" / "NORMAL" / "leak.png"), _noise(0))  # trainNORMAL0.png's bytes
    table = split_table(load_dataset(str(tmp_path)))
    warning = next(n for n in table.notes if "copies of one film in two splits" in n)
    assert "leak.png (test)" in warning or "trainNORMAL0.png (train)" in warning


def test_perceptual_hash_joins_re_encoded_copies_and_keeps_real_films_apart():
    film = np.array(Image.fromarray(_noise(7, 128)).resize((128, 128)))
    smooth = np.array(Image.fromarray(film).resize((32, 32)).resize((128, 128), Image.BILINEAR))
    other = np.array(Image.fromarray(_noise(8, 32)).resize((128, 128), Image.BILINEAR))
    smaller = np.array(Image.fromarray(smooth).resize((100, 100), Image.BILINEAR))
    hashes = [perceptual_hash(x) for x in (smooth, smaller, other)]
    groups = find_copies(["a", "b", "c"], hashes)
    assert [g.rows for g in groups] == [(0, 1)] and not groups[0].identical
    assert [(g.rows, g.identical) for g in find_copies(["same", "same", "c"], [hashes[2], hashes[2], hashes[0]])
            ] == [((0, 1), True)]


def test_kermany_train_has_copies_only_within_a_patient():
    from conftest import shared_dataset

    table = load_dataset(shared_dataset("kermany", "train"))
    groups = {}
    for patient, group in zip(table.patients, table.meta["copy_group"]):
        if group:
            groups.setdefault(group, set()).add(patient)
    assert len(groups) >= 20 and all(len(patients) == 1 for patients in groups.values())


# row 9
def test_a_file_made_unreadable_after_the_cache_saw_it_is_dropped(tmp_path, monkeypatch):
    for cls in ("A", "B"):
        for k in range(2):
            write_image(str(tmp_path / cls / f"{k}.png"), _noise(k + (9 if cls == "B" else 0)))
    assert len(load_dataset(str(tmp_path))) == 4
    victim = str(tmp_path / "A" / "0.png")
    real_open = open

    def denied(path, *args, **kwargs):  # root reads a chmod-000 file; plant what every other user gets
        if os.fspath(path) == victim:
            raise PermissionError(13, "Permission denied", victim)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    table = load_dataset(str(tmp_path))
    assert len(table) == 3
    assert [(d.path, d.reason) for d in table.dropped] == [(victim, "cannot read file: Permission denied")]


# row 11
def test_a_class_missing_from_validation_is_refused(tmp_path):
    for k in range(10):
        write_image(str(tmp_path / "PNEUMONIA" / f"patient{k:02d}_0.png"), _noise(k))
    write_image(str(tmp_path / "NORMAL" / "patient99_0.png"), _noise(99))
    table = split_table(load_dataset(str(tmp_path)), (0.6, 0.2, 0.2), seed=1)
    with pytest.raises(SplitError, match=r"split has no NORMAL image \(the data has 1 in all, from 1 patient"):
        check_classes_in_splits(table)


# row 12
def test_exif_orientation_is_applied_as_viewers_do(tmp_path):
    upright = gradient(40, 60)  # wide
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))  # saved on its side (60 x 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    path = str(tmp_path / "side.jpg")
    stored.save(path, exif=exif, quality=100)
    image = read_gray(read_bytes(path))
    assert image.shape == (40, 60)
    assert np.abs(image.astype(int) - upright).mean() < 3  # the ramp runs left to right again


# row 13
@pytest.mark.parametrize("encoding,separator", [("utf-8-sig", ","), ("utf-8", ";"), ("utf-8-sig", "\t")])
def test_excel_csvs_with_a_byte_order_mark_or_semicolons_are_read(tmp_path, encoding, separator):
    for k, name in enumerate(["a.png", "b.png", "c.png", "d.png"]):
        write_image(str(tmp_path / name), _noise(k))
    rows = ["path,label", "a.png,NORMAL", "b.png,PNEUMONIA", "c.png,NORMAL", "d.png,PNEUMONIA"]
    text = "\r\n".join(row.replace(",", separator) for row in rows) + "\r\n"
    (tmp_path / "labels.csv").write_bytes(text.encode(encoding))
    table = load_dataset(str(tmp_path), csv_path=str(tmp_path / "labels.csv"))
    assert table.class_counts() == {"NORMAL": 2, "PNEUMONIA": 2}


# row 14
def test_tiff_webp_gif_and_dicom_under_any_name_are_read(tmp_path):
    (tmp_path / "NORMAL").mkdir()
    for k, fmt in enumerate(["tif", "webp", "gif"]):
        options = {"lossless": True} if fmt == "webp" else {}
        Image.fromarray(_noise(k)).save(tmp_path / "NORMAL" / f"n.{fmt}", **options)
    raw = (np.arange(48 * 48).reshape(48, 48) % 997 * 4).astype(np.uint16)
    write_dicom(str(tmp_path / "PNEUMONIA" / "scan.dicom"), raw)
    write_dicom(str(tmp_path / "PNEUMONIA" / "IM0001"), raw + 7)
    write_dicom(str(tmp_path / "PNEUMONIA" / "scan2.dcm"), raw + 11)
    (tmp_path / "PNEUMONIA" / "README.txt").write_text("not a film")
    table = load_dataset(str(tmp_path))
    names = sorted(os.path.basename(p) for p in table.paths)
    assert names == ["IM0001", "n.gif", "n.tif", "n.webp", "scan.dicom", "scan2.dcm"]
    assert [os.path.basename(d.path) for d in table.dropped] == ["README.txt"]
    assert any("1 files in class folders are not images" in n for n in table.notes)
    for name in ("n.tif", "n.webp"):  # lossless: the pixels themselves
        np.testing.assert_array_equal(load_gray(str(tmp_path / "NORMAL" / name), (48, 48))[..., 0],
                                      _noise(["tif", "webp"].index(name.split(".")[1])))


def test_the_verification_cache_holds_content_fingerprints(tmp_path):
    paths = [write_image(str(tmp_path / c / "x.png"), _noise(k)) for k, c in enumerate("AB")]
    fingerprints = {}
    usable, _ = verify.verify_files(paths, root=str(tmp_path), fingerprints=fingerprints)
    again = {}
    verify.verify_files(paths, root=str(tmp_path), fingerprints=again)  # from the cache
    assert usable == paths and fingerprints == again and len({f.sha256 for f in again.values()}) == 2


# found by the fresh-clone review of this issue
def test_a_blank_label_cell_in_single_label_data_is_refused(tmp_path):
    csv_path = _csv_data(tmp_path, "path,label", ["a.png,NORMAL", "b.png,PNEUMONIA", "c.png,", "d.png,NORMAL"])
    with pytest.raises(DataError, match=r"1 of 4 images have no label \(e.g. .*c.png\).*--task multilabel"):
        load_dataset(str(tmp_path), csv_path=csv_path)
    table = load_dataset(str(tmp_path), csv_path=csv_path, task="multilabel")
    assert table.task == "multilabel" and table.labels.sum(axis=1).tolist() == [1, 1, 0, 1]


@pytest.mark.parametrize("value", ["", "-1", "0.5"])
def test_a_one_hot_column_with_a_blank_or_uncertain_cell_is_refused(tmp_path, value):
    rows = ["a.png,1,0", "b.png,0,1", f"c.png,{value},1", "d.png,1,0"]
    csv_path = _csv_data(tmp_path, "path,Edema,Effusion", rows)
    with pytest.raises(DataError, match=rf"line 4: column 'Edema' holds 0/1 labels but says '{value}' here"):
        load_dataset(str(tmp_path), csv_path=csv_path)


def test_a_split_column_with_an_unknown_or_missing_value_is_refused(tmp_path):
    rows = ["a.png,NORMAL,train", "b.png,PNEUMONIA,train", "c.png,NORMAL,holdout", "d.png,PNEUMONIA,test"]
    with pytest.raises(DataError, match=r"line 4: split 'holdout' is not one of"):
        load_dataset(str(tmp_path), csv_path=_csv_data(tmp_path, "path,label,split", rows))
    rows[2] = "c.png,NORMAL,"
    table = load_dataset(str(tmp_path), csv_path=_csv_data(tmp_path, "path,label,split", rows))
    with pytest.raises(SplitError, match=r"covers 3 of 4 images \(.*c.png has none\).*--resplit"):
        split_table(table)


def test_rows_with_too_few_or_too_many_fields_are_refused(tmp_path):
    for rows, count in ((["a.png,NORMAL,p1", "b.png,PNEUMONIA"], 2), (["a.png,NORMAL,p1", "b.png,PNEU,MONIA,p2"], 4)):
        csv_path = _csv_data(tmp_path, "path,label,patient", rows)
        with pytest.raises(DataError, match=rf"line 3: {count} fields where the header has 3"):
            load_dataset(str(tmp_path), csv_path=csv_path)


def test_placeholder_patient_ids_are_no_patient(tmp_path):
    ids = ["NaN", "nan", "", "N/A", "p9"]
    rows = [f"{k}.png,{'NORMAL' if k % 2 else 'PNEUMONIA'},{pid}" for k, pid in enumerate(ids)]
    table = load_dataset(str(tmp_path), csv_path=_csv_data(tmp_path, "path,label,patient", rows))
    assert table.patients == [None, None, None, None, "p9"]
    assert len(set(table.group_ids())) == 5


def test_a_label_column_named_twice_in_another_case_is_refused(tmp_path):
    csv_path = _csv_data(tmp_path, "path,Label,label", ["a.png,NORMAL,PNEUMONIA", "b.png,PNEUMONIA,NORMAL"])
    with pytest.raises(DataError, match=r"names column 'Label' 2 times \(Label, label\)"):
        load_dataset(str(tmp_path), csv_path=csv_path)


def test_two_label_csvs_in_the_folder_ask_for_csv(tmp_path):
    _csv_data(tmp_path, "path,label", ["img/a.png,NORMAL", "img/b.png,PNEUMONIA"])
    (tmp_path / "other.csv").write_text("path,label\nimg/a.png,PNEUMONIA\n")
    with pytest.raises(DataError, match=r"holds 2 label CSVs \(labels.csv, other.csv\): pass --csv FILE"):
        load_dataset(str(tmp_path))


def test_images_in_sub_folders_of_a_class_folder_are_read_and_said(tmp_path):
    for k, name in enumerate(["NORMAL/a.png", "NORMAL/batch2/b.png", "NORMAL/batch2/deep/c.png",
                              "NORMAL/masks/m.png", "NORMAL/.thumbs/t.png", "PNEUMONIA/p.png"]):
        write_image(str(tmp_path / name), _noise(k))
    write_image(str(tmp_path / "PNEUMONIA" / "IM0001"), _noise(9), fmt="PNG")  # a PNG with no extension
    os.symlink(tmp_path / "NORMAL", tmp_path / "NORMAL" / "batch2" / "up")  # a loop: every folder read once
    table = load_dataset(str(tmp_path))
    names = sorted(os.path.relpath(p, tmp_path) for p in table.paths)
    assert names == ["NORMAL/a.png", "NORMAL/batch2/b.png", "NORMAL/batch2/deep/c.png", "PNEUMONIA/IM0001",
                     "PNEUMONIA/p.png"]
    assert any("2 images of" in n and "labelled NORMAL" in n for n in table.notes)
    assert any("skipped 2 folders" in n for n in table.notes)


def test_a_class_list_that_spells_one_label_twice_keeps_them_apart(tmp_path):
    for k, folder in enumerate(["NORMAL", "normal", "PNEUMONIA"]):
        write_image(str(tmp_path / folder / "x.png"), _noise(k))
    table = load_dataset(str(tmp_path), classes=["NORMAL", "normal", "PNEUMONIA"])
    assert table.class_counts() == {"NORMAL": 1, "normal": 1, "PNEUMONIA": 1}


def test_quoted_labels_fold_into_their_class(tmp_path):
    rows = ["a.png,NORMAL", "b.png,'NORMAL'", 'c.png,"""NORMAL"""', "d.png,PNEUMONIA", "e.png,NORMAL"]
    table = load_dataset(str(tmp_path), csv_path=_csv_data(tmp_path, "path,label", rows))
    assert table.class_counts() == {"NORMAL": 4, "PNEUMONIA": 1}


def test_flat_images_are_not_near_copies_of_each_other():
    flat = [np.zeros((8, 8), np.uint8), np.full((30, 30), 200, np.uint8), np.full((1, 1), 255, np.uint8)]
    assert find_copies(["a", "b", "c"], [perceptual_hash(x) for x in flat]) == []


# found by the second fresh-clone review
def test_a_blank_label_next_to_a_two_label_row_is_refused_where_normal_is_a_class(tmp_path):
    rows = ["a.png,NORMAL", "b.png,PNEUMONIA", "c.png,", "d.png,PNEUMONIA|NORMAL", "e.png,NORMAL"]
    csv_path = _csv_data(tmp_path, "path,label", rows)
    with pytest.raises(DataError, match=r"1 images with two or more labels, 1 with none; e\.g\. .*d.png is "
                                        r"PNEUMONIA\|NORMAL\), but the class 'NORMAL' cannot sit beside a finding"):
        load_dataset(str(tmp_path), csv_path=csv_path)
    assert load_dataset(str(tmp_path), csv_path=csv_path, task="multilabel").task == "multilabel"


def test_inferred_multilabel_data_says_so(tmp_path):
    rows = ["a.png,Effusion", "b.png,Mass|Effusion", "c.png,", "d.png,Mass"]
    table = load_dataset(str(tmp_path), csv_path=_csv_data(tmp_path, "path,label", rows))
    assert table.task == "multilabel"
    assert any("task multilabel, inferred: 1 images carry two or more labels and 1 none" in n for n in table.notes)


@pytest.mark.parametrize("inner", ["NORMAL", "normal", "lung_masks", "Masks"])
def test_a_sub_folder_named_like_another_class_or_like_masks_is_refused(tmp_path, inner):
    write_image(str(tmp_path / "NORMAL" / "n.png"), _noise(1))
    write_image(str(tmp_path / "PNEUMONIA" / "p.png"), _noise(2))
    write_image(str(tmp_path / "PNEUMONIA" / inner / "x.png"), _noise(3))
    with pytest.raises(DataError, match=r"inside class folder PNEUMONIA but named like class NORMAL|looks like a "
                                        r"folder of masks inside class folder PNEUMONIA"):
        load_dataset(str(tmp_path))


def test_an_empty_csv_a_blank_path_and_excel_na_patients_are_named(tmp_path):
    (tmp_path / "labels.csv").write_bytes(b"")
    with pytest.raises(DataError, match="labels.csv is empty"):
        load_dataset(str(tmp_path), csv_path=str(tmp_path / "labels.csv"))
    rows = ["a.png,NORMAL,#N/A", "b.png,PNEUMONIA,#N/A", "", ",NORMAL,p3"]  # a blank line, then a blank path
    names = ["a.png", "b.png"]
    with pytest.raises(DataError, match=r"labels.csv line 5: the 'path' cell is empty"):  # the file's own line
        load_dataset(str(tmp_path), csv_path=_csv_data(tmp_path, "path,label,patient", rows, names))
    table = load_dataset(str(tmp_path), csv_path=_csv_data(tmp_path, "path,label,patient", rows[:2], names))
    assert table.patients == [None, None]
