"""Disk size of the device install against the full one, each measured in a fresh virtual environment.

    python benchmarks/edge_install.py [--work DIR] [--keep]

Creates two venvs under --work (default a temporary folder): one with `pip install ./edge` (cxr-keras-edge:
.tflite prediction with ai-edge-litert, numpy, Pillow, pydicom), one with `pip install .` (the full toolkit,
TensorFlow included, no dev extras). Prints each one's size on disk (`du`), its site-packages, the largest
packages, and the time pip took. Needs the package index (or a pip cache).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def megabytes(path: str) -> float:
    """Size on disk as `du -sk` counts it (blocks, not file lengths)."""
    return int(subprocess.run(["du", "-sk", path], capture_output=True, text=True, check=True).stdout.split()[0]) / 1024


def build(venv: str, target: str) -> float:
    """A fresh venv with `target` installed; returns pip's wall time in seconds."""
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    start = time.perf_counter()
    subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    target], check=True, cwd=os.path.dirname(venv))
    return time.perf_counter() - start


def site_packages(venv: str) -> str:
    lib = os.path.join(venv, "lib")
    return os.path.join(lib, os.listdir(lib)[0], "site-packages")


def largest(folder: str, count: int = 5) -> str:
    sizes = sorted(((megabytes(os.path.join(folder, n)), n) for n in os.listdir(folder)
                    if os.path.isdir(os.path.join(folder, n)) and not n.endswith(".dist-info")), reverse=True)
    return ", ".join(f"{name} {size:.0f}" for size, name in sizes[:count])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="folder for the two venvs (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the venvs")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="cxr-install-")
    os.makedirs(work, exist_ok=True)
    empty = os.path.join(work, "empty")
    subprocess.run([sys.executable, "-m", "venv", empty], check=True)
    rows = [("empty venv (pip only)", megabytes(empty), megabytes(site_packages(empty)), 0.0, "")]
    for name, target in (("edge: pip install ./edge", os.path.join(REPO, "edge")), ("full: pip install .", REPO)):
        venv = os.path.join(work, name.split(":")[0])
        seconds = build(venv, target)
        packages = site_packages(venv)
        rows.append((name, megabytes(venv), megabytes(packages), seconds, largest(packages)))
    print("| install | venv MB | site-packages MB | pip s | largest packages (MB) |\n|---|---|---|---|---|")
    for name, total, packages, seconds, big in rows:
        print(f"| {name} | {total:.0f} | {packages:.0f} | {seconds:.0f} | {big} |")
    edge, full = rows[1][1], rows[2][1]
    print(f"\nedge / full: {edge:.0f} / {full:.0f} MB = {edge / full:.1%}")
    if not args.keep and not args.work:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
