"""File-based dataset plugins: ``ham10000`` (ham10000.py), ``isic`` (isic.py) and ``folder`` (folder.py), on files.py.

Each reads a real distributed layout and returns records (image_id, label, group, source,
row + metadata); the core decodes, caches and splits. Labels go through one vocabulary
(``augforge.data.CLASS_NAMES`` and its documented ``SYNONYMS``); a value outside it is a
``DataError`` naming the file, line and value, or with ``skip_bad=True`` a counted skip
listed in ``self.skipped`` (the core writes it to ``skipped.csv``). Never a guessed label.

Common keyword arguments: ``root`` (folder, or the CSV file itself), ``classes`` (list or
comma-separated string of names/synonyms; None = all), ``max_per_class`` (0 = no cap; a
seeded random subset per class), ``seed``, ``skip_bad``.
"""

from augforge.plugins import hookimpl
from augforge_plugins.files import FileDataset, index_images
from augforge_plugins.folder import Folder
from augforge_plugins.ham10000 import HAM10000
from augforge_plugins.isic import ISIC


@hookimpl
def augforge_register_datasets():
    return [HAM10000, ISIC, Folder]


__all__ = ["HAM10000", "ISIC", "Folder", "FileDataset", "index_images"]
