import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own verification cache, never the user's ~/.cache."""
    monkeypatch.setenv("CXR_KERAS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def shared_dataset(*parts: str) -> str:
    """Path of a dataset in ../shared, or skip the test with the reason."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip(f"{path} is not here (it is in the team's shared data, not in a fresh clone)")
    return path


@pytest.fixture(scope="session")
def synthetic_binary(tmp_path_factory):
    from cxr_keras.data.synthetic import write_dataset

    return write_dataset(str(tmp_path_factory.mktemp("synth") / "binary"), "binary", n_patients=30, size=64, seed=3)
