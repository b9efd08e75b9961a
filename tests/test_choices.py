"""The choices the parsers offer (cxr_keras/choices.py, read without TensorFlow) are what the modules implement,
and `cxr --help` starts no TensorFlow."""

import subprocess
import sys

import numpy as np
import pytest

from cxr_keras import choices


def test_each_list_is_what_its_module_implements():
    from cxr_keras.data import augment, shifts, sources
    from cxr_keras.evaluate import calibration, inference, thresholds
    from cxr_keras.models.registry import REGISTRY

    assert choices.BACKBONES == tuple(REGISTRY)
    assert choices.AUGMENT_PRESETS == tuple(augment.PRESETS)
    assert choices.SHIFTS == tuple(shifts.SHIFTS)
    assert (choices.HELD_IN_SHIFTS, choices.HELD_OUT_SHIFTS) == (shifts.GROUPS["held-in"], shifts.GROUPS["held-out"])
    assert sources.LAYOUTS is choices.LAYOUTS and calibration.METHODS == choices.CALIBRATION_METHODS
    for rule in choices.THRESHOLD_RULES:
        thresholds.parse_rule(rule + (":0.9" if rule in ("sensitivity", "specificity", "fixed") else ""))
    assert thresholds.parse_rule(thresholds.DEFAULT_RULE)[0] in choices.THRESHOLD_RULES
    pixels = np.full((1, 8, 8, 1), 128.0, np.float32)
    fed = {p: np.asarray(inference.feed(pixels, inference.ModelSpec("binary", ["a", "b"], (8, 8), 3, p)))
           for p in choices.PREPROCESS}
    assert len({round(float(v.mean()), 4) for v in fed.values()}) == len(choices.PREPROCESS)  # each one differs


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["export"], ["predict"], ["gradcam"]])
def test_help_starts_no_tensorflow(command):
    code = ("import sys\nfrom cxr_keras.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'cv2', 'sklearn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, *command, "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-500:] + result.stderr[-500:]
