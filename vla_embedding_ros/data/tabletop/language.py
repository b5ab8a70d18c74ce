"""Instruction templates for the tabletop task.

An instruction names its object by colour and shape (``{c}`` and ``{s}`` slots; the shape is
said with a random synonym) and asks for one primitive. Each primitive has training templates
and held-out templates for the ``paraphrase`` split. Held-out templates are paraphrases built
only from words that training templates also use (reordered, or recombined with another verb
or politeness frame), so a frozen sentence encoder can map them near their training versions;
a test checks that their vocabulary is covered by the training vocabulary.
"""
from __future__ import annotations

import re

import numpy as np

SHAPE_WORDS = {'cube': ('cube', 'block', 'box'), 'ball': ('ball', 'sphere'),
               'triangle': ('triangle', 'wedge'), 'ring': ('ring', 'donut')}

TRAIN_TEMPLATES = {
    'pick': ('pick up the {c} {s}', 'grab the {c} {s}', 'lift the {c} {s}', 'take the {c} {s}',
             'please pick up the {c} {s}', 'pick the {c} {s} up', 'grab the {s} that is {c}'),
    'push_left': ('push the {c} {s} to the left', 'shove the {c} {s} to the left',
                  'slide the {c} {s} to the left', 'move the {c} {s} left',
                  'could you push the {c} {s} to the left', 'push the {s} that is {c} left',
                  'the {c} {s}, push it to the left'),
    'push_right': ('push the {c} {s} to the right', 'shove the {c} {s} to the right',
                   'slide the {c} {s} to the right', 'move the {c} {s} right',
                   'please push the {c} {s} to the right', 'slide the {s} that is {c} right',
                   'the {c} {s}, move it to the right'),
    'push_forward': ('push the {c} {s} forward', 'move the {c} {s} away from you',
                     'slide the {c} {s} forward', 'shove the {c} {s} away from you',
                     'please push the {c} {s} away from you', 'push the {s} that is {c} forward',
                     'the {c} {s}, move it forward'),
    'push_back': ('pull the {c} {s} back', 'move the {c} {s} towards you',
                  'push the {c} {s} back', 'slide the {c} {s} towards you',
                  'could you pull the {c} {s} back', 'pull the {s} that is {c} towards you',
                  'the {c} {s}, push it back'),
}

HELDOUT_TEMPLATES = {
    'pick': ('could you lift the {c} {s}', 'take the {s} that is {c} please',
             'the {c} {s}, pick it up'),
    'push_left': ('please slide the {c} {s} left', 'move the {s} that is {c} to the left',
                  'could you shove the {c} {s} to the left'),
    'push_right': ('could you move the {c} {s} right', 'push the {s} that is {c} to the right',
                   'the {c} {s}, shove it right'),
    'push_forward': ('could you slide the {c} {s} away from you',
                     'move the {s} that is {c} forward', 'push the {c} {s} forward please'),
    'push_back': ('please move the {c} {s} back', 'slide the {s} that is {c} towards you',
                  'the {c} {s}, pull it towards you'),
}

TEMPLATE_SETS = {'train': TRAIN_TEMPLATES, 'heldout': HELDOUT_TEMPLATES}


def template_id(primitive: str, template_set: str, number: int) -> str:
    """Stable id of a template, e.g. ``push_left/heldout/1``."""
    return f'{primitive}/{template_set}/{number}'


def make_instruction(rng: np.random.Generator, primitive: str, color: str, shape: str,
                     template_set: str = 'train') -> tuple[str, str]:
    """Draw a template and a shape synonym; return (instruction, template id)."""
    templates = TEMPLATE_SETS[template_set][primitive]
    number = int(rng.integers(len(templates)))
    words = SHAPE_WORDS[shape]
    noun = words[int(rng.integers(len(words)))]
    return templates[number].format(c=color, s=noun), template_id(primitive, template_set, number)


def template_pattern(template: str) -> re.Pattern:
    """A regex matching every filling of ``template`` (any colour word, any shape word)."""
    parts = re.split(r'(\{[cs]\})', template)
    return re.compile('^' + ''.join(r'[a-z]+' if p in ('{c}', '{s}') else re.escape(p)
                                    for p in parts) + '$')


def vocabulary(templates: dict[str, tuple[str, ...]]) -> set[str]:
    """Words used by a template set, slots excluded."""
    words = set()
    for group in templates.values():
        for template in group:
            words.update(re.findall(r'[a-z]+', template.replace('{c}', '').replace('{s}', '')))
    return words
