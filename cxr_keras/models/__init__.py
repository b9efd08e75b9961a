"""Models: the backbone registry, the model factory, fine-tuning stages and the baseline CNN.

Importing this package registers the toolkit's own layers and losses with Keras (Calibration, CLAHE, the
test-time augmentation views, the weighted loss, the out-of-distribution score), so `import cxr_keras.models` lets plain
`keras.saving.load_model` open a calibrated, CLAHE or TTA `best.keras`; `cxr_keras.models.saving.load_model`
does it for you.
"""

from cxr_keras.models import calibration, clahe, losses, ood, tta  # noqa: F401  (registration with Keras)
