import csv
import os

import numpy as np
import pytest
from conftest import shared_dataset
from helpers import write_image

from cxr_keras.data.sources import NIH_FINDINGS, DataError, detect_layout, load_dataset, patient_from_name


def test_folder_layout_one_folder_per_class(tmp_path):
    for cls, n in (("Covid-19", 2), ("No_findings", 3), ("Pneumonia", 4)):
        for k in range(n):
            write_image(str(tmp_path / cls / f"img{k}.png"))
    (tmp_path / "Pneumonia" / "notes.txt").write_text("not an image extension: ignored")
    table = load_dataset(str(tmp_path))
    assert table.layout == "folder"
    assert table.task == "multiclass"
    assert table.class_counts() == {"Covid-19": 2, "No_findings": 3, "Pneumonia": 4}
    assert table.labels.sum(axis=1).tolist() == [1.0] * 9
    assert "layout folder" in table.notes[0]


def test_kermany_layout_keeps_splits_and_parses_patients(tmp_path):
    names = {"NORMAL": ["IM-0115-0001.jpeg", "NORMAL2-IM-0115-0001.jpeg", "IM-0115-0002.jpeg"],
             "PNEUMONIA": ["person1000_bacteria_2931.jpeg", "person1000_virus_1681.jpeg", "person7_virus_3.jpeg"]}
    for split in ("train", "test"):
        for cls, files in names.items():
            for name in files:
                write_image(str(tmp_path / split / cls / f"{split[:2]}{name}" if split == "test" else
                                tmp_path / split / cls / name), fmt="JPEG")
    table = load_dataset(str(tmp_path))
    assert table.layout == "kermany"
    train = table.split("train")
    assert len(train) == 6 and len(table.split("test")) == 6
    patients = dict(zip(map(os.path.basename, train.paths), train.patients))
    assert patients["IM-0115-0001.jpeg"] == patients["IM-0115-0002.jpeg"] == "IM-0115"
    assert patients["NORMAL2-IM-0115-0001.jpeg"] == "NORMAL2-IM-0115"
    assert patients["person1000_bacteria_2931.jpeg"] == patients["person1000_virus_1681.jpeg"] == "person1000"
    assert table.task == "binary" and table.classes[table.positive_index] == "PNEUMONIA"
    assert train.targets()[:, 0].tolist() == [0, 0, 0, 1, 1, 1]


def test_single_kermany_split_folder(tmp_path):
    write_image(str(tmp_path / "train" / "NORMAL" / "IM-0001-0001.jpeg"), fmt="JPEG")
    write_image(str(tmp_path / "train" / "PNEUMONIA" / "person1_virus_1.jpeg"), fmt="JPEG")
    table = load_dataset(str(tmp_path / "train"))
    assert table.layout == "kermany" and table.splits == ["train", "train"]
    assert table.patients == ["IM-0001", "person1"]


def test_covid_radiography_layout_ignores_masks(tmp_path):
    for cls in ("COVID", "Normal", "Lung_Opacity"):
        write_image(str(tmp_path / cls / "images" / f"{cls}-1.png"))
        write_image(str(tmp_path / cls / "masks" / f"{cls}-1.png"))
    (tmp_path / "COVID.metadata.xlsx").write_bytes(b"PK")
    table = load_dataset(str(tmp_path))
    assert table.layout == "covid-radiography"
    assert len(table) == 3 and all("/images/" in p for p in table.paths)


def test_covid_qu_ex_layout(tmp_path):
    for split in ("Train", "Val", "Test"):
        for cls in ("COVID-19", "Non-COVID", "Normal"):
            write_image(str(tmp_path / split / cls / "images" / f"{cls}_{split}.png"))
            write_image(str(tmp_path / split / cls / "lung masks" / f"{cls}_{split}.png"))
    table = load_dataset(str(tmp_path))
    assert table.layout == "covid-qu-ex"
    assert sorted(set(table.splits)) == ["test", "train", "val"] and len(table) == 9


def _write_nih_fixture(root):
    rows = [("00000001_000.png", "Cardiomegaly|Effusion", "1", "PA"), ("00000001_001.png", "No Finding", "1", "AP"),
            ("00000002_000.png", "Hernia", "2", "PA"), ("00000003_000.png", "Mass", "3", "PA")]
    write_image(str(root / "images_001" / "00000001_000.png"))
    write_image(str(root / "images_002" / "deeper" / "00000001_001.png"))
    write_image(str(root / "images_002" / "00000002_000.png"))
    write_image(str(root / "images_002" / "99999999_000.png"))  # not in the CSV
    csv_path = root / "Data_Entry_2017.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                         "Patient Gender", "View Position"])
        for name, labels, patient, view in rows:
            writer.writerow([name, labels, 0, patient, 50, "M", view])
    return csv_path


def test_nih_csv_finds_images_recursively_and_counts_missing_rows(tmp_path):
    csv_path = _write_nih_fixture(tmp_path)
    table = load_dataset(str(tmp_path), csv_path=str(csv_path))
    assert table.layout == "nih" and table.task == "multilabel" and table.classes == NIH_FINDINGS
    assert [os.path.basename(p) for p in table.paths] == ["00000001_000.png", "00000001_001.png", "00000002_000.png"]
    assert table.labels[0, NIH_FINDINGS.index("Cardiomegaly")] == 1 and table.labels[0].sum() == 2
    assert table.labels[1].sum() == 0  # No Finding
    assert table.patients == ["1", "1", "2"]
    assert table.meta["view_position"] == ["PA", "AP", "PA"]
    assert any("1 of 4 CSV rows have no image" in n and "00000003_000.png" in n for n in table.notes)
    assert any("1 images under" in n and "not in the CSV" in n for n in table.notes)


def test_generic_csv_with_onehot_columns(tmp_path):
    for k in range(4):
        write_image(str(tmp_path / "imgs" / f"{k}.png"))
    (tmp_path / "labels.csv").write_text("file,patient_id,Effusion,Mass,age\n"
                                         "imgs/0.png,a,1,0,40\nimgs/1.png,a,1,1,41\nimgs/2.png,b,0,0,3\n"
                                         "imgs/3.png,c,0,1,7\n")
    table = load_dataset(str(tmp_path))
    assert table.layout == "csv" and table.classes == ["Effusion", "Mass"] and table.task == "multilabel"
    np.testing.assert_array_equal(table.labels, [[1, 0], [1, 1], [0, 0], [0, 1]])
    assert table.patients == ["a", "a", "b", "c"]


def test_generic_csv_with_delimited_single_labels_is_multiclass(tmp_path):
    for k in range(3):
        write_image(str(tmp_path / f"{k}.png"))
    csv_path = tmp_path / "meta" / "labels.csv"
    csv_path.parent.mkdir()
    csv_path.write_text("path,diagnosis,split\n0.png,covid,train\n1.png,normal_lung,test\n2.png,viral,valid\n")
    table = load_dataset(str(tmp_path), csv_path=str(csv_path))
    assert table.task == "multiclass" and table.classes == ["covid", "normal_lung", "viral"]
    assert table.splits == ["train", "test", "val"]


def test_auto_layout_refuses_unknown_layouts_and_lists_known_ones(tmp_path):
    write_image(str(tmp_path / "loose.png"))
    with pytest.raises(DataError) as err:
        detect_layout(str(tmp_path))
    for name in ("folder", "kermany", "covid-radiography", "covid-qu-ex", "nih", "csv"):
        assert name in str(err.value)


def test_patient_patterns():
    from cxr_keras.data.sources import PATIENT_PATTERNS

    builtin = [p for ps in PATIENT_PATTERNS.values() for p in ps]
    assert patient_from_name("00000061_012.png", builtin) == "61"
    assert patient_from_name("patient00012_2.png", builtin) == "patient00012"
    assert patient_from_name("COVID-10.png", builtin) is None
    assert patient_from_name("sub-07_scan.png", [r"^sub-(\d+)_"]) == "07"


def test_real_nih_subset_joined_with_full_csv():
    images = shared_dataset("darkcovidnet")
    csv_path = shared_dataset("nih-metadata", "Data_Entry_2017_v2020.csv.gz")
    table = load_dataset(images, csv_path=csv_path)
    assert len(table) == 1000 and table.task == "multilabel"
    counts = table.class_counts()
    # The label counts stated in the dataset's SOURCE.md for its 500 pneumonia images (the 500 normals add none).
    assert counts["Pneumonia"] == 500 and counts["Infiltration"] == 187 and counts["Atelectasis"] == 113
    assert counts["Edema"] == 96 and counts["Effusion"] == 90 and counts["Consolidation"] == 33
    # SOURCE.md says 703 patients, which is 371 (pneumonia) + 332 (no findings) counted per folder; 21 patients
    # have images in both, so 682 distinct patients.
    assert len(set(table.patients)) == 682
    assert any("111,120 of 112,120 CSV rows have no image" in n for n in table.notes)


def test_real_kermany_folder_patients():
    table = load_dataset(shared_dataset("kermany", "train"))
    assert len(table) == 5216 and table.class_counts() == {"NORMAL": 1341, "PNEUMONIA": 3875}
    assert all(p is not None for p in table.patients)
    assert len({p for p, y in zip(table.patients, table.targets()[:, 0]) if y == 1}) == 1635


def _generic_csv(root, rows, header="path,label,patient"):
    for row in rows:
        name = row.split(",")[0]
        if not name.startswith(("/", "..")):
            write_image(str(root / name))
    (root / "labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(root / "labels.csv")


def test_generic_csv_keeps_normal_as_a_class_of_its_own(tmp_path):
    csv_path = _generic_csv(tmp_path, ["a.png,NORMAL,p1", "b.png,PNEUMONIA,p2", "c.png,normal,p3", "d.png,none,p4"])
    with pytest.raises(DataError, match="labels \\['none'\\] are not in the class list"):  # normal is NORMAL
        load_dataset(str(tmp_path), csv_path=csv_path, classes=["NORMAL", "PNEUMONIA"])
    with pytest.raises(DataError, match="labels \\['none', 'normal'\\] are not in the class list"):
        load_dataset(str(tmp_path), csv_path=csv_path, classes=["NORMAL", "PNEUMONIA"], keep_label_case=True)
    csv_path = _generic_csv(tmp_path, ["a.png,NORMAL,p1", "b.png,PNEUMONIA,p2", "c.png,PNEUMONIA,p3"])
    table = load_dataset(str(tmp_path), csv_path=csv_path)
    assert table.task == "binary" and table.classes == ["NORMAL", "PNEUMONIA"]
    np.testing.assert_array_equal(table.labels, [[1, 0], [0, 1], [0, 1]])
    table = load_dataset(str(tmp_path), csv_path=csv_path, classes=["NORMAL", "PNEUMONIA"])
    assert table.task == "binary" and table.class_counts() == {"NORMAL": 1, "PNEUMONIA": 2}


@pytest.mark.parametrize("bad", ["../../../../etc/passwd", "/etc/passwd", "sub/../../outside.png"])
def test_csv_paths_that_leave_the_images_folder_are_refused_naming_the_row(tmp_path, bad):
    write_image(str(tmp_path / "outside.png"))
    root = tmp_path / "data"
    csv_path = _generic_csv(root, ["a.png,NORMAL,p1", "b.png,PNEUMONIA,p2", f"{bad},PNEUMONIA,p3"])
    with pytest.raises(DataError, match=f"labels.csv line 4: path '{bad}' is outside the images folder"):
        load_dataset(str(root), csv_path=csv_path)


def test_outside_paths_are_read_when_allowed(tmp_path):
    outside = write_image(str(tmp_path / "elsewhere" / "c.png"))
    root = tmp_path / "data"
    csv_path = _generic_csv(root, ["a.png,NORMAL,p1", "b.png,PNEUMONIA,p2", f"{outside},PNEUMONIA,p3"])
    table = load_dataset(str(root), csv_path=csv_path, allow_outside_paths=True)
    assert table.paths[-1] == outside


def test_nih_image_index_cannot_escape_either(tmp_path):
    csv_path = _write_nih_fixture(tmp_path)
    text = csv_path.read_text().replace("00000002_000.png", "/etc/passwd")
    csv_path.write_text(text)
    with pytest.raises(DataError, match="line 4: path '/etc/passwd' is outside"):
        load_dataset(str(tmp_path), csv_path=str(csv_path))


def test_duplicate_rows_are_used_once_and_contradictions_refused(tmp_path):
    rows = ["a.png,NORMAL,p1", "b.png,PNEUMONIA,p2", "./a.png,NORMAL,p1", "c.png,PNEUMONIA,p3"]
    table = load_dataset(str(tmp_path), csv_path=_generic_csv(tmp_path, rows))
    assert len(table) == 3 and any("./a.png (lines 2 and 4)" in n for n in table.notes)
    rows[2] = "a.png,PNEUMONIA,p1"
    contradiction = "a.png is listed on line 2 as \\['NORMAL'\\] and on line 4 as \\['PNEUMONIA'\\]"
    with pytest.raises(DataError, match=contradiction):
        load_dataset(str(tmp_path), csv_path=_generic_csv(tmp_path, rows))


def test_nih_csv_without_patient_id_takes_it_from_the_file_name(tmp_path):
    csv_path = _write_nih_fixture(tmp_path)
    rows = list(csv.reader(open(csv_path)))
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([[c for i, c in enumerate(r) if i != 3] for r in rows])  # no Patient ID column
    table = load_dataset(str(tmp_path), csv_path=str(csv_path))
    assert table.patients == ["1", "1", "2"]


def test_a_csv_path_with_a_folder_never_falls_back_to_another_file_of_that_name(tmp_path):
    rows = ["a.png,NORMAL,p1", "b.png,PNEUMONIA,p2", "sub/x.png,PNEUMONIA,p5", "c.png,PNEUMONIA,p4"]
    csv_path = _generic_csv(tmp_path, rows)  # writes the images it names: sub/x.png is a PNEUMONIA image
    text = open(csv_path).read().replace("sub/x.png,PNEUMONIA,p5", "other/x.png,NORMAL,p3")
    open(csv_path, "w").write(text)  # a row naming a file that is not there, with the same file name
    table = load_dataset(str(tmp_path), csv_path=csv_path)
    assert [os.path.basename(p) for p in table.paths] == ["a.png", "b.png", "c.png"]
    assert [d.path for d in table.dropped] == ["other/x.png (CSV line 4)"]


def test_a_folder_with_one_label_csv_beside_other_tables_reads_the_label_csv(tmp_path):
    """The COVID-19 Radiography folder ships metadata.csv (file, label) and near_duplicates.csv (file_a, file_b)."""
    for k, label in enumerate(["COVID", "Normal", "COVID", "Normal"]):
        write_image(str(tmp_path / label / f"{label}-{k}.png"), np.full((8, 8), 40 * k, np.uint8))
    (tmp_path / "metadata.csv").write_text("file,label\n" + "".join(
        f"{label}/{label}-{k}.png,{label}\n" for k, label in enumerate(["COVID", "Normal", "COVID", "Normal"])))
    (tmp_path / "near_duplicates.csv").write_text("file_a,file_b,corr32\nCOVID/COVID-0.png,COVID/COVID-2.png,0.99\n")
    table = load_dataset(str(tmp_path))
    assert table.layout == "csv" and table.classes == ["COVID", "Normal"] and len(table) == 4
    (tmp_path / "second.csv").write_text("path,label\nCOVID/COVID-0.png,Normal\n")
    with pytest.raises(DataError, match="2 label CSVs"):
        load_dataset(str(tmp_path))
