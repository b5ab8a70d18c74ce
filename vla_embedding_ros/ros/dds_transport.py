"""Which Fast DDS transports the package's own launchers give their processes.

Fast DDS's default transports lose most raw 640x480 frames between processes (its shared
memory segment is smaller than one frame); ``config/fastdds_large_frames.xml`` keeps shared
memory with a segment big enough for them. The demo, the demo launch file and the latency
bench use it unless the user already chose transports.
"""
from __future__ import annotations

from ..package_share import package_file

PROFILE_FILE = 'fastdds_large_frames.xml'
PROFILES_VAR = 'FASTDDS_DEFAULT_PROFILES_FILE'
BUILTIN_VAR = 'FASTDDS_BUILTIN_TRANSPORTS'


def large_frames_profile() -> str:
    """``share/vla_embedding_ros/config/fastdds_large_frames.xml`` when installed there,
    else the source tree's ``config/`` copy (editable installs, ``make demo``)."""
    return package_file('config', PROFILE_FILE)


def transports_chosen(env) -> bool:
    """Whether ``env`` (a dict or ``os.environ``) already picks Fast DDS transports."""
    return bool(env.get(PROFILES_VAR) or env.get(BUILTIN_VAR))


def with_large_frame_transport(env: dict[str, str]) -> dict[str, str]:
    """``env`` plus the large-frame profile, unless it already picks Fast DDS transports."""
    if transports_chosen(env):
        return env
    return {**env, PROFILES_VAR: large_frames_profile()}


def describe(env: dict[str, str]) -> str:
    """One line for logs and tables: which transports these processes use."""
    if env.get(PROFILES_VAR):
        return f'{PROFILES_VAR}={env[PROFILES_VAR]}'
    return f"{BUILTIN_VAR}={env.get(BUILTIN_VAR) or 'DEFAULT'}"


def main(argv=None) -> int:
    """``vla-dds-profile``: print the large-frame profile's path, for a shell without ROS:

        export FASTDDS_DEFAULT_PROFILES_FILE=$(vla-dds-profile)
    """
    import argparse
    import inspect

    argparse.ArgumentParser(prog='vla-dds-profile', description=inspect.cleandoc(main.__doc__),
                            formatter_class=argparse.RawDescriptionHelpFormatter
                            ).parse_args(argv)
    print(large_frames_profile())
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
