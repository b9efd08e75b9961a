"""cxr-keras-edge: `cxr predict` for .tflite models on a device without TensorFlow or Keras.

    pip install ./edge          (from a clone of cxr_keras; gives the `cxr-predict` command)

The modules are the main package's own files (../cxr_keras), not copies: only those that prediction from a
.tflite file imports. Install it instead of the full package, not beside it: both provide `cxr_keras`.
"""

import os
import re

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.relpath(os.path.join(HERE, "..", "cxr_keras"), HERE)
MODULES = ["config", "io_utils", "edge", "predict", "data.dicom", "data.image_io", "data.input_checks", "data.walk"]

with open(os.path.join(HERE, "..", "cxr_keras", "__init__.py")) as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

setup(
    name="cxr-keras-edge",
    version=VERSION,
    description="cxr_keras prediction for .tflite chest X-ray models, without TensorFlow",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"cxr_keras": SOURCE, "cxr_keras.data": os.path.join(SOURCE, "data")},
    py_modules=[f"cxr_keras.{name}" for name in MODULES],
    install_requires=["ai-edge-litert>=1.0", "numpy>=1.26", "pillow>=10", "pydicom>=2.4"],
    entry_points={"console_scripts": ["cxr-predict = cxr_keras.predict:main"]},
)
