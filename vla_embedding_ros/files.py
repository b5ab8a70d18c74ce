"""File helpers shared by everything that writes what users keep (checkpoints, datasets)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process umask, read without changing it (Linux /proc); 0o022 elsewhere."""
    try:
        with open('/proc/self/status', encoding='ascii') as status:
            for line in status:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def make_shareable(path: str | os.PathLike) -> None:
    """Give a file or directory tree from mkstemp/mkdtemp (modes 0600/0700) the modes a plain
    write would have (0666/0777 minus the umask) before it is renamed into place: a node
    running as another user, or a colcon install, must be able to read a checkpoint."""
    path = Path(path)
    mask = _umask()
    for item in [path, *(path.rglob('*') if path.is_dir() else ())]:
        if not item.is_symlink():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``.

    A reader never sees a half-written file, and a failed write leaves the old one intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; library files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
