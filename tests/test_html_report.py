"""report.html of an evaluation: self-contained, its gallery and flagged films, and its threshold slider driven
in a real browser, the numbers it shows checked against metrics.json and scikit-learn."""

import csv
import io
import json
import os
import re

import numpy as np
import pytest
from browser import chromium, errors
from helpers import write_blob_dataset
from sklearn.metrics import confusion_matrix

from cxr_keras.data.sources import load_dataset
from cxr_keras.data.table import ImageTable
from cxr_keras.evaluate.evaluate import write_evaluation
from cxr_keras.models.contract import ModelSpec


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return load_dataset(write_blob_dataset(str(tmp_path_factory.mktemp("html") / "data"), 30, size=32, seed=2))


@pytest.fixture(scope="module")
def binary_page(blobs, tmp_path_factory):
    """An evaluation of made-up scores (overlapping classes, so both kinds of mistake) with three films flagged."""
    y = blobs.labels[:, 1]
    rng = np.random.default_rng(0)
    scores = np.clip(0.35 * y + rng.uniform(0, 0.65, len(y)), 0, 1)
    ood = rng.normal(10, 1, len(y))
    ood[[0, 31, 45]] = [40, 30, 20]
    out = str(tmp_path_factory.mktemp("binary"))
    metrics = write_evaluation(out, ModelSpec("binary", blobs.classes, (32, 32)), blobs, y, scores, 0.55,
                               "given", resamples=200, ood=(ood, 15.0))
    return out, metrics


def _page(out: str) -> str:
    return open(os.path.join(out, "report.html"), encoding="utf-8").read()


def test_the_page_is_self_contained(binary_page):
    out, _ = binary_page
    text = _page(out)
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/") for s in sources)  # every figure inlined
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched from a network
    for href in re.findall(r'href="([^"#][^"]*)"', text):  # relative links point at files that exist
        assert os.path.exists(os.path.normpath(os.path.join(out, href))) or href.startswith("../stress"), href
    assert "<script>" in text and 'id="op-data"' in text


def test_gallery_shows_false_positives_and_negatives_with_truth_and_flagged_films_apart(binary_page):
    out, metrics = binary_page
    kinds = {f["kind"] for f in metrics["failures"]}
    assert kinds == {"false positive", "false negative"}
    counts = [sum(f["kind"] == k for f in metrics["failures"]) for k in sorted(kinds)]
    assert counts == [4, 4]  # an equal share of each kind
    for f in metrics["failures"]:
        assert os.path.isfile(os.path.join(out, f["tile"]))
        assert f["true"] != f["predicted"] and {f["true"], f["predicted"]} == {"NORMAL", "PNEUMONIA"}
    text = _page(out)
    assert 'id="gallery-false-positive"' in text and 'id="gallery-false-negative"' in text
    first = metrics["failures"][0]
    assert f"true {first['true']}, predicted {first['predicted']}" in text
    flagged = metrics["ood"]["flagged_films"]
    assert [round(f["ood_score"]) for f in flagged] == [40, 30, 20]  # highest first, only those over the cut
    assert 'id="gallery-flagged"' in text and "out-of-distribution score 40" in text


def _shown(driver, keys=("threshold", "sensitivity", "specificity", "tp", "fp", "tn", "fn", "ppv", "npv",
                         "sensitivity-ci", "specificity-ci", "ppv-user", "npv-user")) -> dict:
    from selenium.webdriver.common.by import By

    return {k: driver.find_element(By.ID, f"op-{k}").text for k in keys}


def test_slider_in_a_real_browser_shows_the_sweep_of_metrics_json(binary_page, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    out, metrics = binary_page
    table = metrics["operating_points"]["PNEUMONIA"]
    with open(os.path.join(out, "scores.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    y = np.array([float(r["true_PNEUMONIA"]) for r in rows])
    s = np.array([float(r["p_PNEUMONIA"]) for r in rows])
    with chromium() as driver:
        driver.get("file://" + os.path.join(out, "report.html"))
        slider = driver.find_element(By.ID, "op-slider")
        chosen = table["threshold"].index(0.55)
        assert int(slider.get_attribute("value")) == chosen  # opens at the threshold in use
        (tn, fp), (fn, tp) = metrics["confusion_matrix"]
        shown = _shown(driver)
        assert [int(shown[k]) for k in ("tp", "fp", "tn", "fn")] == [tp, fp, tn, fn]
        assert shown["sensitivity"] == f"{metrics['sensitivity']:.3f}"
        assert shown["specificity"] == f"{metrics['specificity']:.3f}"
        low, high = metrics["ci"]["sensitivity"]
        assert shown["sensitivity-ci"] == f"[{low:.3f}, {high:.3f}]"

        for moves, key in ((7, Keys.ARROW_LEFT), (19, Keys.ARROW_RIGHT)):  # a person moving it
            for _ in range(moves):
                slider.send_keys(key)
            k = int(slider.get_attribute("value"))
            assert k != chosen
            t = table["threshold"][k]
            tn, fp, fn, tp = confusion_matrix(y, s >= t, labels=[0, 1]).ravel()
            shown = _shown(driver)
            assert [int(shown[c]) for c in ("tp", "fp", "tn", "fn")] == [tp, fp, tn, fn]
            assert [int(table[c][k]) for c in ("tp", "fp", "tn", "fn")] == [tp, fp, tn, fn]
            assert shown["sensitivity"] == f"{tp / (tp + fn):.3f}" == f"{table['sensitivity'][k]:.3f}"
            assert shown["specificity"] == f"{tn / (tn + fp):.3f}" == f"{table['specificity'][k]:.3f}"
            assert shown["ppv"] == (f"{tp / (tp + fp):.3f}" if tp + fp else "n/a")

        prevalence = driver.find_element(By.ID, "op-prevalence")
        prevalence.clear()
        prevalence.send_keys("10")
        sens, spec = table["sensitivity"][k], table["specificity"][k]
        assert _shown(driver)["ppv-user"] == f"{sens * 0.1 / (sens * 0.1 + (1 - spec) * 0.9):.3f}"
        assert _shown(driver)["npv-user"] == f"{spec * 0.9 / (spec * 0.9 + (1 - sens) * 0.1):.3f}"
        driver.find_element(By.ID, "op-reset").click()
        assert int(slider.get_attribute("value")) == chosen
        assert errors(driver) == []
        png = driver.find_element(By.ID, "explorer").screenshot_as_png
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    assert pixels.std() > 20  # drawn: text, curves and tables, not a blank panel


def test_multilabel_page_has_a_slider_per_finding_and_survives_a_hostile_class_name(blobs, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    rng = np.random.default_rng(1)
    y = (rng.uniform(size=(len(blobs), 2)) < 0.4).astype(float)
    scores = np.clip(0.3 * y + rng.uniform(0, 0.7, y.shape), 0, 1)
    hostile = 'Nodule"\'<!--<script>&'  # would end or swallow the page's data block if written raw
    table = ImageTable(blobs.paths, y.astype("float32"), ["Effusion", hostile], "multilabel", blobs.patients,
                       blobs.splits)
    metrics = write_evaluation(str(tmp_path), ModelSpec("multilabel", table.classes, (32, 32)), table, y, scores,
                               [0.4, 0.6], "given", resamples=100)
    assert list(metrics["operating_points"]) == ["Effusion", hostile]
    assert "<!--" not in open(os.path.join(str(tmp_path), "report.md")).read()  # Markdown shows it as text
    with chromium() as driver:
        driver.get("file://" + os.path.join(str(tmp_path), "report.html"))
        assert len(driver.find_elements(By.TAG_NAME, "img")) >= 4  # the figures after the data block are there
        Select(driver.find_element(By.ID, "op-finding")).select_by_index(1)  # the hostile one
        nodule = metrics["operating_points"][hostile]
        k = int(driver.find_element(By.ID, "op-slider").get_attribute("value"))
        assert nodule["threshold"][k] == 0.6
        decided = scores[:, 1] >= 0.6
        assert int(_shown(driver, ("tp",))["tp"]) == int((decided & (y[:, 1] == 1)).sum()) == nodule["tp"][k]
        assert errors(driver) == []


def test_metrics_json_carries_the_table_the_page_shows(binary_page):
    out, metrics = binary_page
    saved = json.load(open(os.path.join(out, "metrics.json")))
    assert saved["operating_points"] == json.loads(json.dumps(metrics["operating_points"]))
    page_data = re.search(r'<script type="application/json" id="op-data">(.*?)</script>', _page(out), re.S)
    assert json.loads(page_data.group(1)) == saved["operating_points"]
