"""Every console script answers --help with its own name and a help text that reads whole.

A user who types ``vla-record-tabletop-bag --help`` must see the command they typed, not
``python -m ...``, and no description may stop on a dangling colon.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / 'setup.py'
# Nodes parse ROS arguments first; their --help is tested with the node (test_ros_*).
NODES = ('vla-action-selector', 'vla-tabletop-sim', 'vla-episode-recorder', 'vla-libero-sim')


def _console_scripts() -> list[tuple[str, str, str]]:
    text = SETUP.read_text(encoding='utf-8')
    found = re.findall(r"f'(vla-[a-z0-9-]+) = \{PACKAGE\}\.([a-z0-9_.]+):([a-z_]+)'", text)
    assert len(found) >= 10, 'setup.py console_scripts not found'
    return [(name, 'vla_embedding_ros.' + module, func) for name, module, func in found]


@pytest.mark.parametrize('name,module,func', [s for s in _console_scripts()
                                              if s[0] not in NODES], ids=lambda v: str(v))
def test_help_names_the_command_and_ends_its_sentences(name, module, func, capsys):
    main = getattr(importlib.import_module(module), func)
    with pytest.raises(SystemExit) as stop:
        main(['--help'])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f'usage: {name} '), out.splitlines()[0]
    before_options = out.split('\noptions:')[0].split('\n\n', 1)
    description = before_options[1] if len(before_options) > 1 else ''
    assert not description.rstrip().endswith(':'), description
