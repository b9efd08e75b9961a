"""How well a run's out-of-distribution score tells its validation films from what it should flag.

    python benchmarks/ood.py --run RUN [--datasets ../shared/datasets] [--count 300]

RUN is a binary run evaluated by `cxr evaluate --run` (best.keras carries the score, best.json its threshold).
Prints, for each set against the run's own validation films (in distribution): the AUROC of three scores, side
by side on the same images, and the share each flags at the shipped threshold:

    mahalanobis  the model's own score (models/ood.py): what ships inside every export
    knn          distance to the 10th nearest of the same training films' features (cosine; Sun et al. 2022)
    confidence   1 - max(p, 1 - p): the classifier's own doubt, no second look at the features

Sets: natural photographs (scikit-image's sample images, with flips and crops), the validation films inverted,
rotated 90 degrees, cropped to their central 40%, JPEG-crushed (quality 5); adult normal films
(covid-radiography-2class/Normal), NIH films (darkcovidnet No_findings, Pneumonia), COVID publication figures
(darkcovidnet Covid-19), synthetic phantoms (`cxr synth`). Then the false-flag rate on validation, the int8
TFLite export's flag against the Keras flag on every image, and the int8 latency with and without the score
(both exports made and timed in this run, alternating).
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

K_NEIGHBOURS = 10


def photographs(size: tuple[int, int]) -> np.ndarray:
    """scikit-image's bundled sample photographs as gray films: each whole, flipped, and as four corner crops."""
    import skimage.data as samples
    from PIL import Image

    images = []
    for name in ("astronaut", "coffee", "chelsea", "camera", "coins", "moon", "page", "text", "horse",
                 "hubble_deep_field", "immunohistochemistry", "rocket", "cat", "grass", "gravel", "brick"):
        try:
            array = np.asarray(getattr(samples, name)())
        except Exception:  # a sample that needs a download: skipped
            continue
        gray = Image.fromarray(array.astype(np.uint8)).convert("L")
        width, height = gray.size
        views = [gray, gray.transpose(Image.FLIP_LEFT_RIGHT)]
        views += [gray.crop((x, y, x + width // 2, y + height // 2)) for x in (0, width // 2) for y in (0, height // 2)]
        images += [np.asarray(v.resize(size[::-1], Image.BILINEAR))[..., None] for v in views]
    return np.stack(images).astype(np.float32)


def transformed(films: np.ndarray) -> dict[str, np.ndarray]:
    """The films inverted, rotated 90 degrees, cropped to the central 40%, and JPEG-crushed."""
    from PIL import Image

    height, width = films.shape[1:3]

    def crop(film):
        h, w = int(0.4 * height), int(0.4 * width)
        top, left = (height - h) // 2, (width - w) // 2
        inner = Image.fromarray(film[top : top + h, left : left + w, 0].astype(np.uint8))
        return np.asarray(inner.resize((width, height), Image.BILINEAR))[..., None]

    def crush(film):
        buffer = io.BytesIO()
        Image.fromarray(film[..., 0].astype(np.uint8)).save(buffer, "JPEG", quality=5)
        return np.asarray(Image.open(buffer))[..., None]

    rotated = np.rot90(films, axes=(1, 2)) if height == width else films[:, ::-1]
    return {"inverted": 255 - films, "rotated 90": np.ascontiguousarray(rotated),
            "cropped 40%": np.stack([crop(f) for f in films]).astype(np.float32),
            "JPEG q5": np.stack([crush(f) for f in films]).astype(np.float32)}


def file_sets(datasets: str, size: tuple[int, int], count: int) -> dict[str, np.ndarray]:
    """Films of other populations and sources, `count` at most each, evenly spaced; sets absent here skipped."""
    from cxr_keras.data.decode import decode_all
    from cxr_keras.data.synthetic import write_dataset
    from cxr_keras.evaluate.stress import evenly_spaced

    patterns = {"adult normals": "covid-radiography-2class/Normal/*",
                "NIH films": "darkcovidnet/[NP]*/*.png", "COVID publication figures": "darkcovidnet/Covid-19/*"}
    sets = {}
    for name, pattern in patterns.items():
        paths = sorted(glob.glob(os.path.join(datasets, pattern)))
        if paths:
            chosen = [paths[i] for i in evenly_spaced(len(paths), count)]
            sets[name] = decode_all(chosen, size).astype(np.float32)
        else:
            print(f"note: no {name} ({pattern} under {datasets}): left out")
    phantoms = write_dataset(os.path.join(tempfile.mkdtemp(), "synth"), n_patients=60, size=max(size), seed=0)
    sets["synthetic phantoms"] = decode_all(sorted(glob.glob(os.path.join(phantoms, "*", "images", "*.png"))), size
                                            ).astype(np.float32)
    return sets


def run_model(model, images: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    from cxr_keras.models.ood import split_outputs

    parts = [split_outputs(model(images[i : i + batch], training=False)) for i in range(0, len(images), batch)]
    return np.concatenate([p for p, _ in parts])[:, 0], np.concatenate([o for _, o in parts])


def knn_distance(train: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Cosine distance to the K-th nearest training feature (scikit-learn's NearestNeighbors)."""
    from sklearn.neighbors import NearestNeighbors

    unit = lambda x: x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)  # noqa: E731
    index = NearestNeighbors(n_neighbors=K_NEIGHBOURS).fit(unit(train))
    return index.kneighbors(unit(features))[0][:, -1]


def int8_exports(run: str, model, metadata: dict, calibration: list[str], work: str) -> dict[str, str]:
    """int8 TFLite files of the model with and without the score, calibrated alike."""
    from cxr_keras.export import export_model
    from cxr_keras.models.ood import classifier_only

    out = {}
    for name, loaded in (("with score", (model, metadata)), ("without", (classifier_only(model), metadata))):
        folder = os.path.join(work, name.replace(" ", "_"))
        export_model(os.path.join(run, "best.keras"), folder, ["tflite-int8"], calibration, 100, loaded=loaded)
        out[name] = os.path.join(folder, "model_int8.tflite")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="an evaluated binary run folder")
    parser.add_argument("--datasets", default=os.path.join("..", "shared", "datasets"))
    parser.add_argument("--count", type=int, default=300, help="films per set (default 300)")
    parser.add_argument("--fit-count", type=int, default=1200, help="training films for the kNN index")
    args = parser.parse_args(argv)

    from sklearn.metrics import roc_auc_score

    from cxr_keras.data.decode import decode_all
    from cxr_keras.edge import TFLiteModel
    from cxr_keras.evaluate.stress import evenly_spaced
    from cxr_keras.export import latency
    from cxr_keras.models.ood import feature_model, has_ood
    from cxr_keras.models.saving import load_model
    from cxr_keras.run_folder import run_table

    model, metadata = load_model(os.path.join(args.run, "best.keras"), compile=False, ood=True)
    if not has_ood(model) or not (metadata or {}).get("ood"):
        print(f"error: {args.run}/best.keras has no out-of-distribution score; run `cxr evaluate --run {args.run}`")
        return 2
    threshold = metadata["ood"]["threshold"]
    size = tuple(model.input_shape[1:3])
    table = run_table(args.run)
    train, val = table.split("train"), table.split("val")
    val_paths = [val.paths[i] for i in evenly_spaced(len(val), args.count)]
    films = decode_all(val_paths, size).astype(np.float32)
    sets = {"natural photographs": photographs(size), **transformed(films), **file_sets(args.datasets, size,
                                                                                        args.count)}
    features = feature_model(model)
    fit_paths = [train.paths[i] for i in evenly_spaced(len(train), args.fit_count)]
    train_features = np.asarray(features.predict(decode_all(fit_paths, size).astype(np.float32), verbose=0))

    def scores(images):
        p, maha = run_model(model, images)
        knn = knn_distance(train_features, np.asarray(features.predict(images, verbose=0)))
        return {"mahalanobis": maha, "knn": knn, "confidence": 1 - np.maximum(p, 1 - p)}

    inside = scores(films)
    print(f"{args.run}: {len(films)} validation films in distribution; shipped threshold {threshold:.4g} flags "
          f"{np.mean(inside['mahalanobis'] > threshold):.3f} of them (target <= 0.05)\n")
    print("| set | images | AUROC mahalanobis | AUROC knn | AUROC confidence | flagged at the threshold |")
    print("|---|---|---|---|---|---|")
    for name, images in sets.items():
        outside = scores(images)
        aurocs = [roc_auc_score(np.r_[np.zeros(len(films)), np.ones(len(images))],
                                np.r_[inside[k], outside[k]]) for k in ("mahalanobis", "knn", "confidence")]
        print(f"| {name} | {len(images)} | " + " | ".join(f"{a:.3f}" for a in aurocs)
              + f" | {np.mean(outside['mahalanobis'] > threshold):.3f} |")

    everything = np.concatenate([films, *sets.values()])
    keras_flags = run_model(model, everything)[1] > threshold
    with tempfile.TemporaryDirectory() as work:
        exports = int8_exports(args.run, model, metadata, train.paths, work)
        device = TFLiteModel(exports["with score"])
        int8_flags = np.array([device.score_one(x)[1] for x in everything]) > threshold
        plain = TFLiteModel(exports["without"])
        timings = {"with score": [], "without": []}
        for _ in range(3):  # alternating, so both see the same machine load
            timings["with score"].append(latency(device.predict_one, films[:40])["mean_ms"])
            timings["without"].append(latency(plain.predict_one, films[:40])["mean_ms"])
    print(f"\nint8 TFLite flag agrees with the Keras flag on {np.mean(int8_flags == keras_flags):.4f} of "
          f"{len(everything)} images (target >= 0.99)")
    with_score, without = np.median(timings["with score"]), np.median(timings["without"])
    print(f"int8 latency per image, median of 3 alternating rounds of 30: with the score {with_score:.2f} ms, "
          f"without {without:.2f} ms ({100 * (with_score / without - 1):+.1f}%; target <= +10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
