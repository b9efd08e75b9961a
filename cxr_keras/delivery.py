"""After training: a run's model explained and made deployable in one call (what the experiments end with)."""

from __future__ import annotations

import os

import numpy as np

from cxr_keras.run_folder import BEST, run_file


def explain_and_export(run_dir: str, gradcam_images: int = 12) -> str:
    """Grad-CAM on test images spread over the split (so every class shows), then SavedModel + TFLite (fp32,
    int8) with a parity report on test (validation when the run has no test split); returns the export folder."""
    from cxr_keras.evaluate.explain import explain
    from cxr_keras.export import export_model, load_for_export, parity_for_table
    from cxr_keras.models.ood import classifier_only
    from cxr_keras.run_folder import run_table

    table = run_table(run_dir)
    name = "test" if len(table.split("test")) else "val"
    images = table.split(name)
    best = run_file(run_dir, BEST)
    spread = sorted({round(i) for i in np.linspace(0, len(images) - 1, min(gradcam_images, len(images)))})
    loaded = load_for_export(best)  # one load for Grad-CAM, the export and its parity report
    classifier = (classifier_only(loaded[0]), loaded[1])  # Grad-CAM reads the probabilities alone
    truths = {images.paths[i]: "+".join(c for c, v in zip(images.classes, images.labels[i]) if v > 0.5) or "no finding"
              for i in spread}  # the true label in each caption
    summary = explain(best, [images.paths[i] for i in spread], os.path.join(run_dir, "gradcam"), loaded=classifier,
                      truths=truths)
    print(f"\nGrad-CAM ({summary['layer']}) of {summary['n_images']} {name} images -> {run_dir}/gradcam/")

    out = os.path.join("saved_models", os.path.basename(run_dir))
    train = table.split("train").paths
    export_model(best, out, ["savedmodel", "tflite-fp32", "tflite-int8"], train, min(200, len(train)), loaded=loaded)
    report = parity_for_table(best, out, images, loaded=loaded)
    print(f"Exported to {out}/ (model_card.json, parity table in README.md):")
    for artifact, row in report["artifacts"].items():
        print(f"  {artifact:<12} AUC {row['roc_auc']:.3f}  max|dp| {row['max_abs_dp']:.1e}  "
              f"{row['bytes'] / 1e6:6.2f} MB  {row['mean_ms']:6.2f} ms/image")
    from cxr_keras.evaluate.run_page import write_run_page

    write_run_page(run_dir, out)
    return out
