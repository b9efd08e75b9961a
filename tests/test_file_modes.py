"""Written files get the mode a plain open() would give them: the umask's, or the replaced file's own."""

import os
import stat

import pytest

from cxr_keras.io_utils import atomic_writer


@pytest.fixture
def umask():
    def set_mask(mask):
        os.umask(mask)

    old = os.umask(0o022)
    os.umask(old)
    yield set_mask
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    with atomic_writer(tmp_path / "a.csv") as f:
        f.write("x")
    assert mode(tmp_path / "a.csv") == expected


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "card.json"
    path.write_text("old")
    os.chmod(path, 0o640)
    with atomic_writer(path) as f:
        f.write("new")
    assert path.read_text() == "new" and mode(path) == 0o640


def test_saved_models_and_savedmodel_folders_are_readable_by_others(tmp_path, umask):
    from cxr_keras.export import export_savedmodel
    from cxr_keras.models.factory import build_model
    from cxr_keras.models.saving import save_model

    umask(0o022)
    model = build_model("baseline", "binary", ["NORMAL", "PNEUMONIA"], 16)
    save_model(model, str(tmp_path / "best.keras"), {"task": "binary", "classes": ["NORMAL", "PNEUMONIA"]})
    assert mode(tmp_path / "best.keras") == 0o644 and mode(tmp_path / "best.json") == 0o644
    export_savedmodel(model, str(tmp_path / "savedmodel"))
    assert mode(tmp_path / "savedmodel") == 0o755
