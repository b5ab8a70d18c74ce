"""File helpers shared by everything that writes what users keep (checkpoints, datasets),
and the bounded readers for the small text and JSON files users hand us."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

# Configs, action libraries and model config.json files are kilobytes; anything past this is
# a mistake (or worse), refused before it is parsed.
MAX_TEXT_FILE_BYTES = 16 << 20


def read_text_bounded(path: str | os.PathLike, max_bytes: int = MAX_TEXT_FILE_BYTES) -> str:
    """The UTF-8 text of ``path``, refusing a file over ``max_bytes`` before reading it.

    Raises:
        FileNotFoundError / OSError: as ``open`` does.
        ValueError: the file is larger than ``max_bytes`` (naming it and both sizes).
    """
    with open(path, 'rb') as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise ValueError(f'{path}: {size} bytes, more than the {max_bytes} a text file '
                             'of this kind may have; refusing to read it')
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:   # grew while we read it (or a special file)
        raise ValueError(f'{path}: more than {max_bytes} bytes; refusing to read it')
    return data.decode('utf-8')


def read_json_object(path: str | os.PathLike) -> dict:
    """The JSON object in ``path`` (read with :func:`read_text_bounded`).

    Raises:
        FileNotFoundError / OSError: as ``open`` does.
        ValueError: too large, not valid JSON, or JSON that is not an object (naming the file).
    """
    try:
        data = json.loads(read_text_bounded(path))
    except json.JSONDecodeError as exc:
        raise ValueError(f'{path}: not valid JSON ({exc})') from exc
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a JSON object, got {type(data).__name__}')
    return data


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
        # mkstemp makes 0600; keep the mode of the file being replaced (else 0644): library
        # files and configs are meant to be read by other users and processes.
        os.chmod(tmp, os.stat(path).st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def publish_directory(tmp: str | os.PathLike, root: str | os.PathLike, overwrite: bool) -> Path:
    """Move a finished ``tmp`` directory (made by mkdtemp beside ``root``) into place.

    The rename is atomic: readers see the old ``root`` or the new one, never a mixture. When
    ``root`` appeared meanwhile and ``overwrite`` is False, ``tmp`` is removed and
    FileExistsError raised; with ``overwrite`` the old one is moved aside (a directory cannot be
    renamed over a non-empty one) and removed after the rename.
    """
    tmp, root = Path(tmp), Path(root)
    make_shareable(tmp)   # mkdtemp made it 0700; datasets are shared
    trash = None
    if root.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(f'{root} appeared while writing; nothing written')
        trash = tmp.with_name(tmp.name + '.old')
        os.rename(root, trash)
    os.rename(tmp, root)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return root


class StagedDirectory:
    """A directory written whole or not at all: everything goes to a hidden temp folder beside
    ``root``, renamed to ``root`` by :meth:`close`. On an exception inside ``with`` (or
    :meth:`abort`) the temp folder is removed and ``root`` is untouched, so a reader never
    sees half a dataset. Writers subclass it and fill in :meth:`_finish` (write the last
    files) and :meth:`_drop` (close open handles before the temp folder goes).

    Raises:
        FileExistsError: ``root`` exists and ``overwrite`` is False.
    """

    def __init__(self, root: str | os.PathLike, overwrite: bool = False):
        self.root = Path(root)
        self.overwrite = overwrite
        if self.root.exists() and not overwrite:
            raise FileExistsError(f'{self.root} exists; pass overwrite=True to replace it')
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f'.{self.root.name}.', suffix='.tmp',
                                         dir=self.root.parent))
        self.closed = False

    def _finish(self) -> None:
        """Write what completes the directory (indexes, metadata); called once by close()."""

    def _drop(self) -> None:
        """Close whatever is still open; called once by abort() before the folder goes."""

    def close(self) -> Path:
        """Finish the directory and move it into place (atomic rename); returns ``root``."""
        if self.closed:
            return self.root
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        self.closed = True
        return publish_directory(self.tmp, self.root, self.overwrite)

    def abort(self) -> None:
        """Drop everything written so far; ``root`` is left as it was."""
        if not self.closed:
            self.closed = True
            self._drop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
