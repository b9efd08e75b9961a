"""`cxr gradcam`: heat maps, figures and the checks of where they look."""

from __future__ import annotations

import argparse
import os
import sys

from cxr_keras.cli.common import add_out_argument
from cxr_keras.io_utils import check_out


def add_parser(commands) -> None:
    """`cxr gradcam` and its options."""
    from cxr_keras.choices import GRADCAM_METHODS as METHODS
    from cxr_keras.choices import PREPROCESS

    gradcam = commands.add_parser("gradcam", help="Grad-CAM heat maps, figures and the pointing game",
                                  description="Grad-CAM / Grad-CAM++ for a .keras model (flat or nested backbone).")
    gradcam.add_argument("--model", required=True, help="a .keras model")
    gradcam.add_argument("--images", nargs="+", required=True, help="image files and/or folders (recursive)")
    add_out_argument(gradcam, "output folder (default ./gradcam)", default="gradcam")
    gradcam.add_argument("--method", choices=METHODS, default="gradcam", help="default gradcam")
    gradcam.add_argument("--layer", help="conv layer to explain (nested: outer/inner); default: the last 4-D one")
    gradcam.add_argument("--class-index", type=int, help="explain this class (default: the decided one)")
    gradcam.add_argument("--threshold", type=float,
                         help="a binary model's decision threshold, which decides the class explained (default: the "
                         "model's own from best.json, else 0.5)")
    gradcam.add_argument("--masks", action="store_true",
                         help="pointing game against lesion masks beside the images (<class>/masks/<finding>/)")
    gradcam.add_argument("--boxes", help="pointing game against boxes: NIH BBox_List_2017.csv(.gz), by file name")
    gradcam.add_argument("--box-finding", help="only the boxes of this finding (e.g. Pneumonia)")
    gradcam.add_argument("--figures", type=int, default=24, help="per-image figures to draw (default 24)")
    gradcam.add_argument("--preprocess", choices=PREPROCESS, help="a foreign model's input (see evaluate)")
    gradcam.add_argument("--class-names", nargs="+", help="a foreign model's classes, in output order")
    gradcam.add_argument("--batch-size", type=int, default=16, help="images per model call (default 16)")
    gradcam.set_defaults(func=cmd_gradcam)


def cmd_gradcam(args: argparse.Namespace) -> int:
    from cxr_keras.evaluate.explain import ExplainOptions, explain
    from cxr_keras.predict import image_paths

    check_out(args.out, args.overwrite, data=args.images)
    missing = [item for item in args.images if not os.path.exists(item)]
    if missing:
        raise ValueError(f"--images {missing[0]} does not exist")
    paths = image_paths(args.images)
    if not paths:
        print(f"error: no images found in {args.images}", file=sys.stderr)
        return 2
    options = ExplainOptions(method=args.method, layer=args.layer, class_index=args.class_index,
                             threshold=args.threshold, preprocess=args.preprocess, class_names=args.class_names,
                             batch_size=args.batch_size, figures=args.figures, masks=args.masks, boxes=args.boxes,
                             box_finding=args.box_finding)
    summary = explain(args.model, paths, args.out, options)
    print(f"{summary['method']} on layer {summary['layer']} for {summary['n_images']} images -> {args.out}/")
    if "pointing_game" in summary:
        print(f"pointing game: {summary['pointing_game']}")
    return 0
