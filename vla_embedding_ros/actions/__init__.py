"""The action vocabulary: the library YAML, declared continuous spaces and naming vectors.

Both ``data/`` (datasets carry a library) and ``selection/`` (the selector scores one) use
this package; it imports neither of them.
"""
from .library import Action, ActionLibrary, Twist, load_library
from .space import ActionSpace, ContinuousDim

__all__ = ['Action', 'ActionLibrary', 'ActionSpace', 'ContinuousDim', 'Twist', 'load_library']
