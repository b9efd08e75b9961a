"""The run folder and everything that reads or writes its life: the named files, the lock that gives it one
trainer, its start (config.json, splits.csv) and reuse after a failed start, repair after a kill, and the state
that `--resume` continues from.

    runs/<name>-<YYYYmmdd-HHMMSS>/
      config.json    the fully resolved config, with the versions of Python, TensorFlow, Keras and cxr_keras
      splits.csv     path, split, patient and labels of every image; dropped.csv for files left out
      history.csv    per epoch: stage, learning rate, losses and metrics on train and validation
      best.keras     the best epoch by `train.monitor` (best.json: task, classes, input size, ...)
      last.keras     the latest epoch with its optimizer (and its state inside); state.json says where `--resume`
                     continues
      tensorboard/   TensorBoard logs
      curves.png     loss, AUC and accuracy per epoch, stages marked
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time

import numpy as np

from cxr_keras.config import ExperimentConfig
from cxr_keras.data.sources import load_table
from cxr_keras.data.splits import apply_saved_splits, save_splits
from cxr_keras.data.table import ImageTable, write_dropped
from cxr_keras.io_utils import atomic_writer, check_outside_data, check_writable
from cxr_keras.models.saving import saved_state
from cxr_keras.runtime import versions

CONFIG, SPLITS, DROPPED, HISTORY = "config.json", "splits.csv", "dropped.csv", "history.csv"
BEST, LAST, STATE, CURVES = "best.keras", "last.keras", "state.json", "curves.png"
TENSORBOARD, LOCK = "tensorboard", ".lock"


class RunError(ValueError):
    """A run cannot start or resume; the message says why and what to do."""


def run_file(run_dir: str, name: str) -> str:
    """One named file of a run folder (CONFIG, SPLITS, ... above)."""
    return os.path.join(run_dir, name)


STUB = {CONFIG, SPLITS, DROPPED, TENSORBOARD}  # what a start leaves before its first epoch


CHECKPOINTS = (LAST, BEST, STATE)  # a folder with one of these holds a completed epoch


def new_run_dir(config: ExperimentConfig, run_dir: str | None, table: ImageTable,
                 hold: contextlib.ExitStack) -> str:
    """A new run folder with config.json, splits.csv (and dropped.csv), held by this process (see
    `only_process`). The folder of a start that failed before any epoch was saved (a kill, a full disk at the first
    checkpoint: nothing but STUB and an unsaved epoch's history.csv in it) is reused."""
    run_dir = run_dir or os.path.join(config.runs_dir, f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunError(f"run directory {run_dir} is a file; choose another --run-dir")
    check_outside_data(run_dir, [config.data.data_dir, config.data.images_dir or ""], "the run folder")
    check_writable(run_dir, option="the run folder")
    os.makedirs(run_dir, exist_ok=True)
    hold.enter_context(only_process(run_dir))
    names = {n for n in os.listdir(run_dir) if not n.startswith(".")}
    saved = any(os.path.exists(os.path.join(run_dir, name)) for name in CHECKPOINTS)
    if saved or names - STUB - {HISTORY}:
        raise RunError(f"run directory {run_dir} exists and is not empty; a previous run is never overwritten: "
                       "choose another name, or --resume it")
    _check_same_start(run_dir, config)
    repair_after_kill(run_dir, 0)  # history rows of an epoch that was never saved, temporary files
    config.save(run_file(run_dir, CONFIG), versions=versions())
    save_splits(table, run_file(run_dir, SPLITS))
    if table.dropped:
        write_dropped(table.dropped, run_file(run_dir, DROPPED))
    return run_dir


def _check_same_start(run_dir: str, config: ExperimentConfig) -> None:
    """A failed start's folder saved no epoch, so nothing is lost when it starts again; with other options than
    before, that is said (stderr), as the folder's name may belong to the other run."""
    try:
        before = ExperimentConfig.load(run_file(run_dir, CONFIG)).to_dict()
    except (OSError, ValueError):
        return  # none, or one a kill left half-written: nothing to compare
    ours = dict(_flatten(config.to_dict()))
    changed = sorted(k for k, v in _flatten(before) if ours.get(k) != v)
    if changed:
        print(f"note: {run_dir} held a start that saved no epoch, made with other options (differs in "
              f"{changed[:5]}); it starts again with these (to repeat that one: --config {run_file(run_dir, CONFIG)} "
              f"--run-dir {run_dir})", file=sys.stderr)


@contextlib.contextmanager
def only_process(run_dir: str):
    """Hold the run folder for this process (an exclusive lock on RUN/.lock, released when the process ends, even
    killed): a second `--resume` of a folder that is training is refused instead of interleaving epochs."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    with open(run_file(run_dir, LOCK), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{run_dir} is being trained by another process right now; wait for it to end or stop "
                           "it, then --resume") from None
        yield


def repair_after_kill(run_dir: str, epochs_done: int) -> None:
    """What a kill can leave behind: history rows of an epoch whose checkpoint was never written (CSVLogger
    writes before the checkpoint), and temporary files of interrupted atomic writes."""
    for name in os.listdir(run_dir):
        if name.startswith(".") and name.endswith((".tmp", ".keras")):
            os.remove(os.path.join(run_dir, name))
    path = run_file(run_dir, HISTORY)
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        lines = f.readlines()
    kept = lines[:1] + [line for line in lines[1:] if int(float(line.split(",", 1)[0])) < epochs_done]
    if len(kept) != len(lines):
        with atomic_writer(path, newline="") as f:
            f.writelines(kept)


RESUME_POINT = (CONFIG, SPLITS, STATE, LAST)


def copy_resume_point(run_dir: str, scratch: str) -> str:
    """A non-chief worker's copy of what resuming the chief's `run_dir` reads (it must see the chief's folder:
    the same host, or a shared filesystem). Every worker then starts from the same epoch and weights."""
    missing = [name for name in RESUME_POINT if not os.path.isfile(os.path.join(run_dir, name))]
    if missing:
        raise RunError(f"--resume {run_dir}: this worker cannot read {', '.join(missing)} there; every worker "
                       "resumes the chief's run folder, so give them all its path (on a filesystem they share)")
    for name in RESUME_POINT:
        shutil.copy2(os.path.join(run_dir, name), os.path.join(scratch, name))
    return scratch


def config_for_resume(run_dir: str, config: ExperimentConfig | None) -> ExperimentConfig:
    state_path = run_file(run_dir, STATE)
    if not os.path.exists(run_file(run_dir, LAST)) or not (
            os.path.exists(state_path) or checkpoint_state(run_dir)):  # a kill before the first state.json
        raise RunError(f"{run_dir} has no completed epoch to resume from (no state.json / last.keras); start it "
                       f"again with --config {run_file(run_dir, CONFIG)} --run-dir {run_dir} (the folder is reused)")
    saved = ExperimentConfig.load(run_file(run_dir, CONFIG))
    if os.path.exists(state_path) and read_state(run_dir).get("complete"):
        raise RunError(f"run {run_dir} is already complete; start a new run to train more")
    if config is not None:
        ours = dict(_flatten(config.to_dict()))
        differing = sorted(k for k, v in _flatten(saved.to_dict()) if k != "model.weights" and ours.get(k) != v)
        if differing:
            raise RunError(f"--resume {run_dir}: the run was made with another config (differs in {differing}); "
                           "resume without options, or start a new run")
    return saved


def _flatten(values: dict, prefix: str = ""):
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", json.loads(json.dumps(value))


def resume_state(run_dir: str) -> dict:
    """Where a resume continues: state.json, or the state saved inside last.keras when that is exactly one
    epoch ahead (a kill after the checkpoint was written and before state.json was; state.json is then brought
    up to date). Any other disagreement means the folder was changed by hand: refused."""
    path = run_file(run_dir, STATE)
    state = read_state(run_dir) if os.path.exists(path) else {"epoch": 0, "best": None, "best_epoch": None}
    inside = checkpoint_state(run_dir)
    if inside is None or inside["epoch"] == state["epoch"]:
        return state
    if inside["epoch"] != state["epoch"] + 1:
        raise RunError(f"--resume {run_dir}: state.json says {state['epoch']} epochs are done but last.keras holds "
                       f"epoch {inside['epoch']}; the folder was changed since training wrote it, so it cannot be "
                       "resumed safely: start a new run")
    state = {**state, **inside}
    write_state(run_dir, state)
    return state


def checkpoint_state(run_dir: str) -> dict | None:
    """The (epoch, best, best_epoch) saved inside last.keras, or None when there is none of that shape."""
    inside = saved_state(run_file(run_dir, LAST))
    if not isinstance(inside, dict):
        return None
    epoch, best, best_epoch = inside.get("epoch"), inside.get("best"), inside.get("best_epoch")
    numbers = isinstance(best, (int, float)) and not isinstance(best, bool) and np.isfinite(best)
    if not (_whole(epoch) and epoch >= 1 and numbers and _whole(best_epoch) and 1 <= best_epoch <= epoch):
        return None
    return {"epoch": epoch, "best": float(best), "best_epoch": best_epoch, "stopped_early": False}


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_state(run_dir: str) -> dict:
    with open(run_file(run_dir, STATE)) as f:
        return json.load(f)


def write_state(run_dir: str, state: dict) -> None:
    with atomic_writer(run_file(run_dir, STATE)) as f:
        json.dump(state, f, indent=2)


def run_table(run_dir: str, config=None) -> ImageTable:
    """A run's data with the split it was trained with (its splits.csv); `config` when already loaded."""
    config = config or ExperimentConfig.load(run_file(run_dir, CONFIG))
    table = load_table(config.data)
    return apply_saved_splits(table, run_file(run_dir, SPLITS))


def seen_in_training(model_path: str, paths: list[str]) -> tuple[int, str | None]:
    """How many of `paths` the run beside `model_path` trained or validated on (its splits.csv), and that file;
    (0, None) for a model with no run folder."""
    import csv

    splits = run_file(os.path.dirname(os.path.abspath(model_path)), SPLITS)
    if not os.path.isfile(splits):
        return 0, None
    with open(splits, newline="") as f:
        used = {os.path.abspath(r["path"]) for r in csv.DictReader(f) if r.get("split") in ("train", "val")}
    return sum(os.path.abspath(p) in used for p in paths), splits
