"""Files the package installs under ``share/vla_embedding_ros/`` (models, config); no ROS needed
(the ament index is asked only when it imports)."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = 'vla_embedding_ros'
SOURCE_TREE = Path(__file__).resolve().parents[1]


def package_file(*parts: str) -> str:
    """``share/vla_embedding_ros/<parts>`` if a ROS install has it there, else the source
    tree's copy (editable installs, ``make demo``)."""
    try:
        from ament_index_python.packages import get_package_share_directory
        shared = os.path.join(get_package_share_directory(PACKAGE), *parts)
        if os.path.exists(shared):
            return shared
    except Exception:  # not in the ament index (plain pip install, no AMENT_PREFIX_PATH)
        pass
    return str(SOURCE_TREE.joinpath(*parts))
