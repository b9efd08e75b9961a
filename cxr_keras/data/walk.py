"""The image files under a folder, the one way every command looks: recursively, symbolic links to folders
followed (each real folder once), hidden folders and lung-mask folders (named exactly `masks`) skipped and
counted, files that are not images (by name or content) listed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cxr_keras.data.image_io import is_image_name

MASK_FOLDER = "masks"  # COVID-QU-Ex and COVID-19 Radiography keep lung masks in <class>/masks/


@dataclass
class Found:
    """What a walk found: image files (sorted), other files, and the folders it skipped."""

    images: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def skipped_text(self) -> str:
        """'skipped 2 folders (masks/, .cache/): lung masks and hidden folders are not films', or ''."""
        if not self.skipped:
            return ""
        shown = ", ".join(os.path.basename(p) + "/" for p in self.skipped[:3]) + (" ..." if len(self.skipped) > 3
                                                                                else "")
        return f"skipped {len(self.skipped)} folders ({shown}): lung masks and hidden folders are not films"


def find_images(folder: str) -> Found:
    """Every image file under `folder` (see the module docstring)."""
    found = Found()
    seen = {os.path.realpath(folder)}
    for here, subdirs, files in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(subdirs):
            path = os.path.join(here, name)
            real = os.path.realpath(path)
            if name.startswith(".") or name == MASK_FOLDER or name.startswith("__"):
                found.skipped.append(path)
            elif real not in seen:  # a link back up the tree, or a second link to one folder: read once
                seen.add(real)
                kept.append(name)
        subdirs[:] = kept
        for name in sorted(files):
            path = os.path.join(here, name)
            if is_image_name(path):
                found.images.append(path)
            elif not name.startswith(".") and os.path.isfile(path):
                found.others.append(path)
    found.images.sort()
    return found
