"""The names every command offers as choices, in one module that imports nothing heavy: `cxr --help` and the
argument parsers read them without starting TensorFlow. The modules that implement each choice import their
list from here (tests/test_choices.py checks that each list is what its module implements).
"""

from __future__ import annotations

TASKS = ("binary", "multiclass", "multilabel")
LAYOUTS = {
    "folder": "ROOT/<class>/*.png|jpg|jpeg|bmp|tif|webp|gif|dcm (sub-folders too), one folder per class",
    "kermany": "ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/ or one such split folder; patients from file names",
    "split-folders": "ROOT/{train,val,test}/<class>/, the data's own split kept",
    "covid-radiography": "ROOT/<class>/images/*.png (masks/ and metadata files ignored)",
    "covid-qu-ex": "ROOT/{Train,Val,Test}/<class>/images/",
    "nih": "--csv Data_Entry_2017*.csv plus the images anywhere under --images-dir (default ROOT)",
    "csv": "--csv FILE (or one .csv in ROOT): a path column plus 0/1 label columns or a delimited labels column",
}

BACKBONES = ("efficientnetb0", "mobilenetv2", "densenet121", "resnet50", "efficientnetlite0", "efficientnetlite1",
             "efficientnetlite2", "baseline")
AUGMENT_PRESETS = ("none", "light", "standard", "strong", "acquisition")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
HELD_IN_SHIFTS = ("contrast", "gamma", "blur", "noise", "resolution", "jpeg", "crop")  # a training option may apply
HELD_OUT_SHIFTS = ("text", "poisson", "grid", "unsharp", "bitdepth", "heel")  # none does: honest stress rows
SHIFTS = HELD_IN_SHIFTS + HELD_OUT_SHIFTS
CALIBRATION_METHODS = ("platt", "temperature")
PREPROCESS = ("none", "unit", "tf", "torch", "caffe")
THRESHOLD_RULES = ("balanced", "plateau", "youden", "f1", "sensitivity", "specificity", "fixed", "shift-mean",
                   "shift-worst")
# Ranked first by the off-site proxies (held-out shifts, adult normals) over two seeds of the recommended recipe
# (docs/results.md, "Decisions off-site"); `balanced`, the default before, cut where other sites' normals crossed.
DEFAULT_RULE = "sensitivity:0.9"
EXPORT_FORMATS = ("savedmodel", "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "tflite-int8-mixed")
GRADCAM_METHODS = ("gradcam", "gradcam++")
