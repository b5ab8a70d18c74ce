"""Open a rosbag2 recording written by any recorder, parsing only the types asked for.

``rosbags``' ``AnyReader`` parses every type definition in a bag when it opens, so one topic
it cannot parse (a service event recorded by Jazzy's ``ros2 bag record --services``, a vendor
message with an exotic definition) refuses the whole bag, and so does one channel in another
encoding (JSON, protobuf: MCAP files from other tools). Importing camera frames and actions
needs none of those topics. This reader opens each storage file itself (MCAP through the
format's own ``mcap`` library, with chunk CRCs checked; sqlite3 and compressed rosbag2
directories through ``rosbags``) and builds its type store from the definitions of the
asked-for topics alone. Everything else is listed (``other_topics``, ``unreadable_topics``),
never fatal.

What it handles, as real recorders write it: rosbag2 directories split into several files,
single ``.mcap``/``.db3`` files, MCAP chunks compressed with zstd or lz4, zstd file or message
compression, custom types whose definitions exist only inside the bag, bags without
definitions (older sqlite3 bags: the standard types of the newest ROS 2 distribution are used,
checked against the recorded type hash where there is one), and a directory whose
``metadata.yaml`` is missing (a recording cut off by a crash: its storage files are read
directly, with a note pointing at ``ros2 bag reindex``).

Every input it cannot read raises ``BagError``: one line naming the bag, the topic where there
is one, and what is wrong. No library exception escapes to the user.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

STORAGE_SUFFIXES = ('.mcap', '.db3')
METADATA = 'metadata.yaml'
REINDEX_HINT = 'ros2 bag reindex'
_CDR = 'cdr'


class BagError(ValueError):
    """An input that cannot be read; the message names the bag (and topic) and the problem."""

    def __init__(self, bag: Path | str, problem: str, topic: str | None = None):
        where = f'{bag}' + (f': topic {topic}' if topic else '')
        super().__init__(f'{where}: {problem}')
        self.bag, self.topic, self.problem = Path(bag), topic, problem


def _natural_key(path: Path):
    """bag_2.mcap before bag_10.mcap (the order a splitting recorder wrote them in)."""
    return [int(p) if p.isdigit() else p for p in re.split(r'(\d+)', path.name)]


def _first_line(error: BaseException) -> str:
    """One line of an error (parser errors continue with the text they stopped at)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = ' '.join(lines[:2]) if lines[0].endswith(':') and len(lines) > 1 else lines[0]
    return text[:300]


def _storage_files(path: Path) -> list[Path]:
    return sorted((p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES and p.is_file()),
                  key=_natural_key)


@dataclass(frozen=True)
class Connection:
    """One topic of one storage file, whichever library reads it."""

    topic: str
    msgtype: str
    definition_format: str     # 'msg', 'idl', or '' (none); anything else is not ROS 2
    definition: str
    serialization: str         # 'cdr' for every ROS 2 middleware
    digest: str = ''           # RIHS01 type hash where the recorder wrote one
    handle: object = field(default=None, compare=False, repr=False)  # the storage's own


def _parse_definition(conn: Connection) -> dict:
    """The types one connection's embedded definition declares (its type and dependencies)."""
    from rosbags.typesys import get_types_from_idl, get_types_from_msg

    if conn.definition_format == 'msg':
        return get_types_from_msg(conn.definition, conn.msgtype)
    if conn.definition_format != 'idl':
        raise ValueError(f'definition in {conn.definition_format!r}, not a ROS 2 format')
    types = {}
    separator = '=' * 80 + '\n'
    if conn.definition.startswith(f'{separator}IDL: '):
        for block in conn.definition.split(separator)[1:]:
            types.update(get_types_from_idl(block.split('\n', 1)[1]))
    else:
        types.update(get_types_from_idl(conn.definition))
    return types


class _McapFile:
    """An MCAP file through the ``mcap`` library, which reads any profile and encoding (rosbags
    refuses a whole file for one channel with, say, a JSON schema)."""

    FORMATS = {'ros2msg': 'msg', 'ros2idl': 'idl', 'omgidl': 'idl', '': ''}
    MAGIC = b'\x89MCAP0\r\n'

    def __init__(self, path: Path, digests: dict[str, str]):
        from mcap.reader import make_reader

        self.path = path
        self._file = open(path, 'rb')  # noqa: SIM115 (closed by close())
        try:
            # A file cut off mid-write has no end magic; the library would read garbage as a
            # footer and report an absurd record length instead.
            if self._file.read(8) != self.MAGIC:
                raise ValueError('no MCAP magic at the start')
            self._file.seek(-8, 2)
            if self._file.read(8) != self.MAGIC:
                raise ValueError('no MCAP end magic')
            self._file.seek(0)
            # CRCs checked: a flipped bit in a chunk must not become a wrong pixel in a dataset.
            self._reader = make_reader(self._file, validate_crcs=True)
            summary = self._reader.get_summary()
            if summary is None:  # written without a summary (streamed): learn the channels
                schemas, channels = self._scan()
            else:
                schemas, channels = summary.schemas, summary.channels
        except BaseException:
            self._file.close()
            raise
        self.connections = []
        for channel in channels.values():
            schema = schemas.get(channel.schema_id)
            name = schema.name if schema else ''
            encoding = schema.encoding if schema else ''
            self.connections.append(Connection(
                topic=channel.topic, msgtype=name,
                definition_format=self.FORMATS.get(encoding, encoding),
                definition=schema.data.decode('utf-8', 'replace') if schema else '',
                serialization=channel.message_encoding,
                digest=digests.get(channel.topic, ''), handle=channel.id))

    def _scan(self):
        schemas, channels = {}, {}
        for schema, channel, _ in self._reader.iter_messages(log_time_order=False):
            channels.setdefault(channel.id, channel)
            if schema is not None:
                schemas.setdefault(schema.id, schema)
        return schemas, channels

    def messages(self, connections: list[Connection]):
        ids = {c.handle: c for c in connections}
        topics = sorted({c.topic for c in connections})
        for _, channel, message in self._reader.iter_messages(topics=topics):
            conn = ids.get(channel.id)
            if conn is not None:
                yield conn, message.log_time, message.data

    def close(self) -> None:
        self._file.close()


class _RosbagsStorage:
    """sqlite3 files and compressed rosbag2 directories, through ``rosbags``."""

    FORMATS = {'MSG': 'msg', 'IDL': 'idl', 'NONE': ''}

    def __init__(self, path: Path):
        from rosbags.rosbag2 import Reader

        self._reader = Reader(path)
        self._reader.open()
        self.connections = [Connection(
            topic=c.topic, msgtype=c.msgtype,
            definition_format=self.FORMATS[c.msgdef.format.name], definition=c.msgdef.data,
            serialization=getattr(c.ext, 'serialization_format', _CDR), digest=c.digest or '',
            handle=c) for c in self._reader.connections]

    def messages(self, connections: list[Connection]):
        mine = {id(c.handle): c for c in connections}
        for native, t, raw in self._reader.messages(connections=[c.handle for c in connections]):
            yield mine[id(native)], t, raw

    def close(self) -> None:
        self._reader.close()


class BagReader:
    """One rosbag2 recording, opened for the topics in ``topics`` only.

    Attributes (after ``open()`` / ``with``):
        connections: the connections of the asked-for topics present in the bag.
        other_topics: {topic: msgtype} of every topic not asked for (not parsed unless needed).
        unreadable_topics: {topic: reason} of topics not asked for whose definition does not
            parse or whose serialization is not CDR (listed so the user sees them, skipped).
        notes: things the user should know about how the bag was read.
    """

    def __init__(self, path: str | Path, topics: Iterable[str]):
        self.path = Path(path)
        self.topics = set(topics)
        self.connections = []
        self.other_topics: dict[str, str] = {}
        self.unreadable_topics: dict[str, str] = {}
        self.notes: list[str] = []
        self._storages = []
        self._typestore = None

    # -- opening ---------------------------------------------------------------------------

    def __enter__(self) -> BagReader:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        try:
            self._storages = []
            for opener, path in self._storage_plan():
                self._storages.append(self._open_storage(opener, path))
            self._select_connections()
            self._typestore = self._build_typestore()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for storage in self._storages:
            try:
                storage.close()
            except Exception:  # closing a half-opened file must not hide why it failed
                pass
        self._storages = []

    def _storage_plan(self) -> list[tuple[object, Path]]:
        """(opener, path) of each storage to read, in recording order."""
        path = self.path
        if not path.exists():
            raise BagError(path, 'no such bag (a rosbag2 directory, .mcap or .db3 file)')
        if path.is_file():
            if path.suffix == '.bag':
                raise BagError(path, 'a ROS 1 bag; convert it first (rosbags-convert --src '
                                     f'{path.name} --dst DIR)')
            if path.suffix not in STORAGE_SUFFIXES:
                raise BagError(path, f'not a rosbag2 file (expected a directory, .mcap or .db3, '
                                     f'got {path.suffix or "no suffix"})')
            return [self._opener(path, {})]
        if not (path / METADATA).is_file():
            files = _storage_files(path)
            if not files:
                raise BagError(path, f'no {METADATA} and no .mcap/.db3 files: not a rosbag2 '
                                     'directory')
            self.notes.append(f'{path.name}: no {METADATA}; read its {len(files)} storage '
                              f'file(s) directly in name order (`{REINDEX_HINT} {path}` '
                              'restores it)')
            return [self._opener(f, {}) for f in files]
        info = self._metadata()
        if (info.get('compression_mode') or '').lower() not in ('', 'none'):
            return [(_RosbagsStorage, path)]  # rosbags decompresses files and messages
        digests = {}
        for entry in info['topics_with_message_count']:
            meta = entry.get('topic_metadata', {}) if isinstance(entry, dict) else {}
            if meta.get('type_description_hash'):
                digests[str(meta.get('name'))] = str(meta['type_description_hash'])
        files = [path / Path(str(p)).name for p in info.get('relative_file_paths') or []]
        missing = [f.name for f in files if not f.is_file()]
        if missing or not files:
            raise BagError(path, f'{METADATA} lists storage files that are not there '
                                 f'({", ".join(missing) or "none listed"}); '
                                 f'`{REINDEX_HINT} {path}` rebuilds it from the files present')
        return [self._opener(f, digests) for f in files]

    @staticmethod
    def _opener(path: Path, digests: dict[str, str]):
        if path.suffix == '.mcap':
            return (lambda p: _McapFile(p, digests)), path
        return _RosbagsStorage, path

    def _metadata(self) -> dict:
        import yaml

        from ...files import read_text_bounded

        where = self.path / METADATA
        try:
            info = yaml.safe_load(read_text_bounded(where))['rosbag2_bagfile_information']
            if not isinstance(info['topics_with_message_count'], list):
                raise TypeError('topics_with_message_count is not a list')
            return info
        except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError) as e:
            raise BagError(self.path, f'{METADATA} is unreadable ({_first_line(e)}); '
                                      f'`{REINDEX_HINT} {self.path}` rewrites it') from None

    def _open_storage(self, opener, path: Path):
        try:
            return opener(path)
        except Exception as e:  # whatever a damaged file makes a library raise
            raise BagError(path, self._open_problem(e)) from None

    @staticmethod
    def _open_problem(error: Exception) -> str:
        text = _first_line(error)
        lowered = f'{type(error).__name__} {text}'.lower()
        if 'magic' in lowered or 'endoffile' in lowered or 'seems to be empty' in lowered:
            return (f'{text}: the file is truncated or not MCAP (a recording cut off by a '
                    'crash: `mcap recover` of the MCAP CLI rewrites what it holds)')
        if 'database' in lowered or 'sqlite' in lowered or 'apsw' in lowered:
            return f'{text}: the sqlite3 file is damaged or not a bag'
        return f'{type(error).__name__}: {text}' if text == type(error).__name__ else text

    # -- types -----------------------------------------------------------------------------

    def _select_connections(self) -> None:
        self.connections = []
        for storage in self._storages:
            for conn in storage.connections:
                if conn.topic in self.topics:
                    if conn.serialization != _CDR:
                        raise BagError(self.path, f'serialization format {conn.serialization!r} '
                                                  'is not supported (only CDR, what every ROS 2 '
                                                  'middleware writes)', conn.topic)
                    self.connections.append(conn)
                else:
                    self.other_topics.setdefault(conn.topic, conn.msgtype)
                    if conn.serialization != _CDR:
                        self.unreadable_topics.setdefault(
                            conn.topic, f'serialization format {conn.serialization!r} (only CDR '
                                        'reads)')

    def _build_typestore(self):
        """A type store with the standard types plus the bag's definitions of the asked-for
        types (the bag's own definition wins: it is what the messages were written with)."""
        from rosbags.typesys import Stores, get_typestore

        from .bag_record import typestore as standard_store

        standard = standard_store()
        types = dict(standard.fielddefs)
        for conn in self.connections:
            if conn.definition_format:
                try:
                    types.update(_parse_definition(conn))
                except Exception as e:  # TypesysError, or a parser tripping on bad text
                    raise BagError(self.path, f'the definition of {conn.msgtype} in the bag '
                                              f'does not parse ({_first_line(e)})',
                                   conn.topic) from None
            elif conn.msgtype not in types:
                raise BagError(self.path, f'type {conn.msgtype} is not a standard type and the '
                                          'bag carries no definition of it', conn.topic)
        self._list_unparseable()
        store = get_typestore(Stores.EMPTY)
        try:
            store.register(types)
        except Exception as e:
            raise BagError(self.path, f'type definitions conflict ({_first_line(e)})') from None
        for conn in self.connections:
            self._check_hash(store, conn)
        return store

    def _list_unparseable(self) -> None:
        """Try the definitions of the other topics only to tell the user which would fail."""
        for storage in self._storages:
            for conn in storage.connections:
                if conn.topic in self.topics or conn.topic in self.unreadable_topics:
                    continue
                if conn.definition_format:
                    try:
                        _parse_definition(conn)
                    except Exception as e:
                        self.unreadable_topics[conn.topic] = (
                            f'definition of {conn.msgtype} does not parse ({_first_line(e)})')

    def _check_hash(self, store, conn) -> None:
        digest = conn.digest
        if not digest.startswith('RIHS01_'):
            return
        try:
            have = store.hash_rihs01(conn.msgtype)
        except Exception:  # a type the hasher cannot describe: nothing to compare
            return
        if have != digest:
            source = 'its definition in the bag' if conn.definition_format else \
                'the standard definition (the bag carries none)'
            raise BagError(self.path, f'{conn.msgtype} was recorded with another definition '
                                      f'(hash {digest[:20]}...) than {source}', conn.topic)

    # -- reading ---------------------------------------------------------------------------

    def messages(self, connections=None) -> Iterator[tuple[object, int, bytes]]:
        """(connection, receive time ns, raw CDR) of the asked-for topics, file by file."""
        wanted = self.connections if connections is None else list(connections)
        for storage in self._storages:
            mine = [c for c in wanted if any(c is r for r in storage.connections)]
            if not mine:
                continue
            try:
                yield from storage.messages(mine)
            except Exception as e:  # a damaged chunk, a CRC mismatch, a cut-off file
                raise BagError(self.path, f'reading stopped: {_first_line(e)} (the file is '
                                          'damaged or truncated after this point)') from None

    def deserialize(self, raw: bytes, msgtype: str):
        """Raises whatever rosbags raises for a corrupt message (callers count those)."""
        return self._typestore.deserialize_cdr(raw, msgtype)
