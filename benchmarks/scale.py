"""How cost grows with the work: the memory and disk caches at N = 5k, 20k and 100k images, and DenseNet121
multi-label training memory by batch size.

    python benchmarks/scale.py [--sizes 5000 20000 100000] [--size 224] [--work DIR] [--densenet-batches 8 16 32 64]

Data: NIH-like multi-label (14 findings, 1-3 images per patient, a generic path/labels/patient CSV); N files
hard-linked to 512 distinct synthetic PNGs, so every file is read and decoded as a real one but the disk holds
512 images. Each (N, cache) cell runs in its own process, so its peak resident memory (ru_maxrss) is its own:
cache build seconds, peak RSS, the first and second epochs' images/s of the pipeline alone (training order,
no augmentation, no model). Printed as a table with each column's growth per 10x of N. Targets: the disk
cache's peak memory flat in N (within 10%), its epoch-2 throughput >= 0.8x the memory cache's, build time
linear in N. Then DenseNet121 (random weights, 14 sigmoid outputs) at --size: peak RSS of three training steps
per batch size, each in its own process, and the largest batch under 8 GiB.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
            "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax")
DISTINCT = 512
GIB = 1024**3


def make_data(root: str, n: int, size: int) -> str:
    """`root/labels.csv` and `root/images/` with `n` files (hard links to DISTINCT synthetic PNGs)."""
    import numpy as np
    from PIL import Image

    csv_path = os.path.join(root, "labels.csv")
    if os.path.exists(csv_path):
        return root
    images = os.path.join(root, "images")
    base = os.path.join(os.path.dirname(root), f"base-{size}")
    os.makedirs(images, exist_ok=True)
    os.makedirs(base, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(DISTINCT):
        path = os.path.join(base, f"{k}.png")
        if not os.path.exists(path):
            yy, xx = np.mgrid[0:size, 0:size]
            lungs = 120 + 60 * np.sin(xx / size * np.pi) + rng.normal(0, 12, (size, size))
            Image.fromarray(np.clip(lungs, 0, 255).astype(np.uint8)).save(path)
    rows, patient = [], 0
    while len(rows) < n:
        for _ in range(rng.integers(1, 4)):
            if len(rows) == n:
                break
            name = f"{len(rows):06d}.png"
            os.link(os.path.join(base, f"{len(rows) % DISTINCT}.png"), os.path.join(images, name))
            found = [f for f in FINDINGS if rng.random() < 0.05]
            rows.append((f"images/{name}", "|".join(found) or "No Finding", f"p{patient}"))
        patient += 1
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "labels", "patient"])
        writer.writerows(rows)
    return root


def cache_cell(root: str, size: int, cache: str, batch: int) -> dict:
    """One (N, cache) cell, in this process: build, then two epochs of the pipeline alone."""
    from cxr_keras.data.pipeline import make_dataset
    from cxr_keras.data.sources import load_dataset

    table = load_dataset(root, csv_path=os.path.join(root, "labels.csv"), path_column="path", labels_column="labels",
                         verify=False)  # the verification pass is `cxr train`'s, timed elsewhere
    start = time.perf_counter()
    ds = make_dataset(table.paths, table.targets(), (size, size), batch, training=True, seed=0, cache=cache)
    build = time.perf_counter() - start
    rates = []
    for _ in range(2):
        start, seen = time.perf_counter(), 0
        for x, _ in ds:
            seen += int(x.shape[0])
        rates.append(seen / (time.perf_counter() - start))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    return {"n": len(table), "build_s": build, "peak_gib": peak, "epoch1": rates[0], "epoch2": rates[1]}


def densenet_cell(size: int, batch: int) -> dict:
    """Peak RSS of three DenseNet121 multi-label training steps at `batch` (the last two timed), in this
    process."""
    import numpy as np

    from cxr_keras.models.factory import build_model, loss_for

    model = build_model("densenet121", "multilabel", list(FINDINGS), size, weights="none")
    model.compile("adam", loss_for("multilabel"))
    x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 1)).astype("float32")
    y = (np.random.default_rng(1).random((batch, len(FINDINGS))) < 0.1).astype("float32")
    model.train_on_batch(x, y)  # the first step traces the graph: not timed
    start = time.perf_counter()
    for _ in range(2):
        model.train_on_batch(x, y)
    return {"batch": batch, "step_s": (time.perf_counter() - start) / 2,
            "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB}


def in_subprocess(call: str) -> dict:
    """Run `call` (an expression of this module) in a fresh interpreter; its JSON result."""
    code = f"import json, sys; sys.path.insert(0, {REPO!r}); from benchmarks.scale import *; print(json.dumps({call}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def growth(values: list[float], sizes: list[int]) -> str:
    """Factor per 10x of N between the smallest and largest N measured."""
    if len(values) < 2 or values[0] <= 0:
        return "-"
    return f"x{(values[-1] / values[0]) ** (1 / math.log10(sizes[-1] / sizes[0])):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[5000, 20000, 100000])
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--batch", type=int, default=32, help="pipeline batch size (default 32)")
    parser.add_argument("--work", help="folder for the data and caches (default: a temporary one, removed)")
    parser.add_argument("--densenet-batches", nargs="*", type=int, default=[8, 16, 32, 64])
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="cxr-scale-")
    os.environ["CXR_KERAS_CACHE_DIR"] = os.path.join(work, "cache")

    results = {"memory": [], "disk": []}
    for n in args.sizes:
        root = make_data(os.path.join(work, f"n{n}"), n, args.size)
        for cache in results:
            cell = in_subprocess(f"cache_cell({root!r}, {args.size}, {cache!r}, {args.batch})")
            results[cache].append(cell)
            print(f"N={n:>7,} {cache:<6} {cell}", flush=True)

    print("\n| cache | N | build s | peak RSS GiB | epoch 1 img/s | epoch 2 img/s |\n|---|---|---|---|---|---|")
    for cache, cells in results.items():
        for cell in cells:
            if "error" in cell:
                print(f"| {cache} | | {cell['error']} | | | |")
                continue
            print(f"| {cache} | {cell['n']:,} | {cell['build_s']:.1f} | {cell['peak_gib']:.2f} | "
                  f"{cell['epoch1']:.0f} | {cell['epoch2']:.0f} |")
        ok = [c for c in cells if "error" not in c]
        sizes = [c["n"] for c in ok]
        print(f"| {cache}: growth per 10x N | | {growth([c['build_s'] for c in ok], sizes)} | "
              f"{growth([c['peak_gib'] for c in ok], sizes)} | {growth([c['epoch1'] for c in ok], sizes)} | "
              f"{growth([c['epoch2'] for c in ok], sizes)} |")
    pairs = [(m, d) for m, d in zip(results["memory"], results["disk"]) if "error" not in m and "error" not in d]
    for memory, disk in pairs:
        print(f"N={memory['n']:,}: disk / memory epoch-2 throughput {disk['epoch2'] / memory['epoch2']:.2f}")

    if args.densenet_batches:
        print(f"\nDenseNet121 multi-label at {args.size} px, three training steps per batch size:")
        print("| batch | s/step | peak RSS GiB |\n|---|---|---|")
        fits = None
        for batch in args.densenet_batches:
            cell = in_subprocess(f"densenet_cell({args.size}, {batch})")
            if "error" in cell:
                print(f"| {batch} | {cell['error']} | |")
                continue
            print(f"| {batch} | {cell['step_s']:.2f} | {cell['peak_gib']:.2f} |", flush=True)
            if cell["peak_gib"] <= 8:
                fits = batch
        print(f"largest batch measured under 8 GiB: {fits}")
    if not args.work:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
