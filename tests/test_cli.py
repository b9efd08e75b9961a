import os

from cxr_keras.cli import main


def test_synth_then_data_report(tmp_path, capsys):
    data = str(tmp_path / "data")
    assert main(["synth", data, "--patients", "10", "--size", "48"]) == 0
    out = str(tmp_path / "report")
    assert main(["data-report", data, "--split", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "layout covid-radiography" in printed and "Patients: 10 named" in printed
    for name in ("report.txt", "class_distribution.png", "dropped.csv", "splits.csv"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert main(["synth", data]) == 2  # never writes into a non-empty folder


def test_data_report_error_is_one_clear_line(tmp_path, capsys):
    assert main(["data-report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_sample_experiment_runs(tmp_path, capsys):
    from experiments.data_report_sample import main as sample_main

    sample_main(["--out", str(tmp_path / "sample"), "--patients", "30", "--size", "48"])
    printed = capsys.readouterr().out
    assert "First training batch: images (16, 48, 48, 1) float32" in printed
    assert os.path.exists(tmp_path / "sample" / "report" / "splits.csv")
