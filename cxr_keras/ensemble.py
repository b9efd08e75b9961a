"""Ensembles of runs: one model that averages the members' probabilities, in a run folder of its own.

Runs of the same data and split (e.g. `--seed 0` and `--seed 1`) make an ensemble whose validation is as clean
as each member's, so `cxr evaluate --run`, the threshold rules, the stress test, export and
`experiments.proxies` treat it like any run. Members trained on other splits are refused: some of the
ensemble's validation images would be training images of a member.
"""

from __future__ import annotations

import csv
import json
import os
import shutil

import keras
import numpy as np

from cxr_keras.io_utils import atomic_writer, check_out
from cxr_keras.run_folder import BEST, CONFIG, SPLITS, run_file

RUN_FILES = (CONFIG, SPLITS, BEST)
SAME = ("task", "classes")  # metadata every member must share


class EnsembleError(ValueError):
    """Runs that cannot be averaged into one model; the message names the run and what differs."""


def average_model(members: list[keras.Model], name: str = "cxr_ensemble") -> keras.Model:
    """One model of the members' graphs (nested as `member_0`, `member_1`...) whose output is the mean of theirs.

    Members output probabilities (the toolkit's models do, calibration included), so the mean is a
    probability; each keeps its own preprocessing inside its graph.
    """
    shape = tuple(members[0].inputs[0].shape[1:])
    for k, member in enumerate(members):
        if len(member.inputs) != 1 or len(member.outputs) != 1:
            raise EnsembleError(f"member {k} ({member.name}) has {len(member.inputs)} inputs and "
                                f"{len(member.outputs)} outputs; an ensemble needs one of each")
        if tuple(member.inputs[0].shape[1:]) != shape:
            raise EnsembleError(f"member {k} takes {tuple(member.inputs[0].shape[1:])} images, member 0 {shape}; "
                                "ensemble runs of the same --image-size")
    image = keras.Input(shape=shape, name="image")
    outputs = [keras.Model(m.inputs[0], m.outputs[0], name=f"member_{k}")(image) for k, m in enumerate(members)]
    return keras.Model(image, keras.layers.Average(name="ensemble_mean")(outputs), name=name)


def ensemble_runs(run_dirs: list[str], out: str, overwrite: bool = False) -> str:
    """Write OUT as a run folder whose best.keras averages the runs' best.keras; returns OUT.

    OUT gets the first run's config.json and splits.csv (the same split for every member, checked) and a
    best.json saying which runs it averages. Its threshold is the first member's until `cxr evaluate --run OUT`
    chooses one on validation.
    """
    from cxr_keras.models.saving import load_metadata, load_model, save_model

    if len(run_dirs) < 2:
        raise EnsembleError(f"an ensemble needs at least two runs; got {len(run_dirs)}")
    real = [os.path.realpath(r) for r in run_dirs]
    repeated = sorted({r for r in run_dirs if real.count(os.path.realpath(r)) > 1})
    if repeated:
        raise EnsembleError(f"run {repeated[0]} is named twice; an ensemble of a run with itself is that run")
    for run in run_dirs:
        missing = [f for f in RUN_FILES if not os.path.isfile(os.path.join(run, f))]
        if missing:
            raise EnsembleError(f"{run} is not a finished run folder (no {', '.join(missing)}); give folders "
                                "that `cxr train` made")
    _check_out_apart(out, run_dirs)
    check_out(out, overwrite)
    _check_same_split(run_dirs)
    metas = [load_metadata(run_file(run, BEST)) or {} for run in run_dirs]  # checked before loading
    nested = next((run for run, meta in zip(run_dirs, metas) if meta.get("ensemble")), None)
    if nested:
        raise EnsembleError(f"{nested} is itself an ensemble; name its member runs instead (else some would weigh "
                            "more than others)")
    for run, meta in zip(run_dirs[1:], metas[1:]):
        for key in SAME:
            if meta.get(key) != metas[0].get(key):
                raise EnsembleError(f"{run} has {key} {meta.get(key)}, {run_dirs[0]} {metas[0].get(key)}; "
                                    f"ensemble runs of the same {key}")
    model = average_model([load_model(run_file(run, BEST), compile=False)[0] for run in run_dirs])
    os.makedirs(out, exist_ok=True)
    for name in (CONFIG, SPLITS):
        shutil.copyfile(os.path.join(run_dirs[0], name), os.path.join(out, name))
    save_model(model, run_file(out, BEST), _metadata(metas, run_dirs))
    with atomic_writer(os.path.join(out, "ensemble.json")) as f:
        json.dump({"members": [os.path.abspath(r) for r in run_dirs]}, f, indent=2)
    return out


def _check_out_apart(out: str, run_dirs: list[str]) -> None:
    """--out must not be a member's folder, inside one, or hold one: an ensemble never writes over a run."""
    target = os.path.realpath(out)
    for run in run_dirs:
        member = os.path.realpath(run)
        if os.path.commonpath([target, member]) in (target, member):
            raise EnsembleError(f"--out {out} is, or is inside, or holds the member run {run}; give a new folder "
                                "apart from the runs")


def _check_same_split(run_dirs: list[str]) -> None:
    first = _splits(run_dirs[0])
    for run in run_dirs[1:]:
        other = _splits(run)
        moved = sum(1 for path, split in other.items() if first.get(path) != split)
        if moved or len(other) != len(first):
            raise EnsembleError(f"{run} was split differently from {run_dirs[0]} ({moved} of {len(other)} images in "
                                "another split): some validation images would be a member's training images; "
                                "ensemble runs of the same data and --split-seed")


def _splits(run_dir: str) -> dict[str, str]:
    with open(run_file(run_dir, SPLITS), newline="") as f:
        return {row["path"]: row["split"] for row in csv.DictReader(f)}


def _metadata(metas: list[dict], run_dirs: list[str]) -> dict:
    """The first member's metadata, said to be an ensemble; its training prior the members' mean."""
    meta = {k: v for k, v in metas[0].items() if k not in ("epoch", "val_auc", "validation_operating_point")}
    meta.update(backbone="ensemble of " + ", ".join(str(m.get("backbone")) for m in metas),
                ensemble=[os.path.abspath(r) for r in run_dirs],
                threshold_rule="member 0's threshold until cxr evaluate --run chooses the ensemble's own")
    priors = [m.get("training_prior") for m in metas]
    if all(p is not None for p in priors):
        meta["training_prior"] = np.mean(np.asarray(priors, dtype=float), axis=0).tolist()
    return meta
