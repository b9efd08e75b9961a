"""cxr_keras: chest X-ray classifiers on Keras 3, from a folder of images to a validated, exportable model."""

import os

# TensorFlow's C++ warnings (e.g. libpng's harmless iCCP profile notes, one per image) drown the useful output;
# set TF_CPP_MIN_LOG_LEVEL yourself before importing cxr_keras to see them. Without an NVIDIA driver, errors go
# too: the only one TensorFlow then logs is its "failed call to cuInit", on every command.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if os.path.exists("/dev/nvidiactl") else "3")

__version__ = "0.1.0"
