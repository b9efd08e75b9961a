"""Experiments: one small module each, runnable with `python -m experiments.<name>`."""

from cxr_keras.cli import import_tensorflow_quietly

import_tensorflow_quietly()  # before any experiment module imports TensorFlow: its start-up lines stay off the console
