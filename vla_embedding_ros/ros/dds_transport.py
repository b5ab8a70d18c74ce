"""Which Fast DDS transports the package's own launchers give their processes.

Fast DDS's default transports lose most raw 640x480 frames between processes (its shared
memory segment is smaller than one frame); ``config/fastdds_large_frames.xml`` keeps shared
memory with a segment big enough for them. The demo, the demo launch file and the latency
bench use it unless the user already chose transports.
"""
from __future__ import annotations

import os
from pathlib import Path

PROFILE_FILE = 'fastdds_large_frames.xml'
PROFILES_VAR = 'FASTDDS_DEFAULT_PROFILES_FILE'
BUILTIN_VAR = 'FASTDDS_BUILTIN_TRANSPORTS'


def large_frames_profile() -> str:
    """``share/vla_embedding_ros/config/fastdds_large_frames.xml`` when installed there,
    else the source tree's ``config/`` copy (editable installs, ``make demo``)."""
    try:
        from ament_index_python.packages import get_package_share_directory
        shared = os.path.join(get_package_share_directory('vla_embedding_ros'), 'config',
                              PROFILE_FILE)
        if os.path.isfile(shared):
            return shared
    except Exception:  # not in the ament index (plain pip install, no AMENT_PREFIX_PATH)
        pass
    return str(Path(__file__).resolve().parents[2] / 'config' / PROFILE_FILE)


def with_large_frame_transport(env: dict[str, str]) -> dict[str, str]:
    """``env`` plus the large-frame profile, unless it already picks Fast DDS transports."""
    if env.get(PROFILES_VAR) or env.get(BUILTIN_VAR):
        return env
    return {**env, PROFILES_VAR: large_frames_profile()}


def describe(env: dict[str, str]) -> str:
    """One line for logs and tables: which transports these processes use."""
    if env.get(PROFILES_VAR):
        return f'{PROFILES_VAR}={env[PROFILES_VAR]}'
    return f"{BUILTIN_VAR}={env.get(BUILTIN_VAR) or 'DEFAULT'}"
