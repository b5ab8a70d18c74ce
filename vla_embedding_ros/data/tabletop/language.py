"""Instructions for the tabletop task: a training grammar and two held-out template sets.

An instruction names its object by colour and shape (``{c}`` and ``{s}`` slots) and asks for
one primitive. Three template sets:

``train``
    A grammar: politeness frames x verb phrases x ways of naming the object, with many
    colour and shape synonyms (``COLOR_WORDS``, ``SHAPE_WORDS``): the words people use,
    so that a person's phrasing is covered by training, not left to the text encoder.
``heldout`` (the ``paraphrase`` split)
    Sentences built only from training words, in combinations no training template uses.
    It shows whether the model learned the task rather than the sentences, not whether it
    understands new words.
``reworded`` (the ``reworded`` split)
    New words: verbs (``REWORDED_VERBS``), sentence frames, and, each independently in half
    of the samples, a held-out colour synonym (``REWORDED_COLOR_WORDS``) and a held-out shape
    synonym (``REWORDED_SHAPE_WORDS``). None of them occurs in any training template or
    synonym list (a test checks it). The template id says which slots were held out
    (``pick/reworded/3+colour+shape``), so results can be broken down by kind of novelty.

The held-out words were chosen before any model was scored on them: natural but less common
names, leaving the most common synonyms to training. They are the only place where the text
encoder's own prior, not training, has to carry the meaning.
"""
from __future__ import annotations

import re
import zlib
from functools import lru_cache

import numpy as np

# -- words -------------------------------------------------------------------------------
# Training synonyms; the first is the canonical name, said in half of the training samples.
COLOR_WORDS = {
    'red': ('red', 'scarlet', 'crimson', 'cherry', 'vermilion'),
    'green': ('green', 'lime', 'emerald', 'olive'),
    'blue': ('blue', 'navy', 'azure', 'cobalt', 'cerulean'),
    'yellow': ('yellow', 'gold', 'golden', 'lemon', 'mustard'),
    'purple': ('purple', 'violet', 'lavender', 'lilac', 'magenta'),
    'orange': ('orange', 'tangerine', 'amber', 'apricot', 'peach'),
}
SHAPE_WORDS = {
    'cube': ('cube', 'block', 'box', 'square', 'brick'),
    'ball': ('ball', 'sphere', 'orb', 'marble'),
    'triangle': ('triangle', 'wedge', 'pyramid'),
    'ring': ('ring', 'donut', 'doughnut', 'loop'),
}
# Held out of training entirely: only the `reworded` split says them.
REWORDED_COLOR_WORDS = {
    'red': ('ruby', 'carmine'), 'green': ('jade', 'mint'),
    'blue': ('sapphire', 'cornflower'), 'yellow': ('canary', 'sunflower'),
    'purple': ('plum', 'amethyst'), 'orange': ('pumpkin', 'carrot'),
}
REWORDED_SHAPE_WORDS = {
    'cube': ('cuboid', 'crate'), 'ball': ('globe', 'bead'),
    'triangle': ('prism', 'arrowhead'), 'ring': ('hoop', 'torus'),
}
REWORDED_VERBS = ('fetch', 'snatch', 'retrieve', 'nudge', 'scoot', 'bump')

# -- the training grammar ----------------------------------------------------------------
# Sideways pushes say the same things to either side; {d} is 'left' or 'right'.
_SIDEWAYS_PHRASES = ('push {o} to the {d}', 'shove {o} to the {d}', 'slide {o} to the {d}',
                     'move {o} {d}', 'push {o} {d}', 'shift {o} to the {d}', 'drag {o} {d}wards',
                     'move {o} one cell to the {d}', 'slide {o} over to the {d}')
# Verb phrases per primitive; {o} is the object phrase.
_TRAIN_VERB_PHRASES = {
    'pick': ('pick up {o}', 'pick {o} up', 'grab {o}', 'lift {o}', 'take {o}', 'grasp {o}',
             'get {o}', 'collect {o}', 'raise {o}', 'lift up {o}'),
    **{f'push_{side}': tuple(p.replace('{d}', side) for p in _SIDEWAYS_PHRASES)
       for side in ('left', 'right')},
    'push_forward': ('push {o} forward', 'move {o} away from you', 'slide {o} forward',
                     'shove {o} away from you', 'shift {o} forward', 'push {o} away from me',
                     'drag {o} further away', 'move {o} one cell forward',
                     'slide {o} to the far side'),
    'push_back': ('pull {o} back', 'move {o} towards you', 'push {o} back',
                  'slide {o} towards you', 'pull {o} towards me', 'drag {o} closer',
                  'shift {o} back', 'move {o} one cell back', 'bring {o} closer'),
}
_TRAIN_FRAMES = ('{vp}', 'please {vp}', '{vp} please', 'could you {vp}', 'can you {vp}',
                 'now {vp}', 'i want you to {vp}', 'you should {vp}', 'your task is to {vp}',
                 'try to {vp}')
_TRAIN_OBJECTS = ('the {c} {s}', 'the {s} that is {c}', 'that {c} {s}')
# Frames that name the object first and refer to it with "it".
_TRAIN_TOPIC_FRAMES = ('the {c} {s}, {vp}', 'find the {c} {s} and {vp}')

# -- the paraphrase split: training words, combinations no training template uses -------
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

# -- the reworded split: new verbs and sentence shapes ------------------------------------
REWORDED_TEMPLATES = {
    'pick': ('go ahead and fetch the {c} {s}', 'i need you to snatch the {s} which is {c}',
             'kindly retrieve the {c} coloured {s}', 'see the {c} {s}? fetch it for me'),
    'push_left': ('go ahead and nudge the {c} {s} to the left',
                  'i need you to scoot the {s} which is {c} left',
                  'kindly bump the {c} coloured {s} over to the left',
                  'see the {c} {s}? nudge it leftwards for me'),
    'push_right': ('go ahead and nudge the {c} {s} to the right',
                   'i need you to scoot the {s} which is {c} right',
                   'kindly bump the {c} coloured {s} over to the right',
                   'see the {c} {s}? nudge it rightwards for me'),
    'push_forward': ('go ahead and nudge the {c} {s} forward',
                     'i need you to scoot the {s} which is {c} away from you',
                     'kindly bump the {c} coloured {s} further away',
                     'see the {c} {s}? nudge it away from me'),
    'push_back': ('go ahead and nudge the {c} {s} back',
                  'i need you to scoot the {s} which is {c} towards you',
                  'kindly bump the {c} coloured {s} closer',
                  'see the {c} {s}? nudge it towards me'),
}


def _training_templates() -> dict[str, tuple[str, ...]]:
    """Every training template, frames x verb phrases x object phrases, minus paraphrases."""
    paraphrases = {t for group in HELDOUT_TEMPLATES.values() for t in group}
    out = {}
    for primitive, phrases in _TRAIN_VERB_PHRASES.items():
        # str.replace, not format: the {c} and {s} slots stay for make_instruction.
        templates = [frame.replace('{vp}', vp.replace('{o}', obj)) for frame in _TRAIN_FRAMES
                     for vp in phrases for obj in _TRAIN_OBJECTS]
        templates += [frame.replace('{vp}', vp.replace('{o}', 'it'))
                      for frame in _TRAIN_TOPIC_FRAMES for vp in phrases]
        out[primitive] = tuple(t for t in dict.fromkeys(templates) if t not in paraphrases)
    return out


TRAIN_TEMPLATES = _training_templates()
TEMPLATE_SETS = {'train': TRAIN_TEMPLATES, 'heldout': HELDOUT_TEMPLATES,
                 'reworded': REWORDED_TEMPLATES}
CANONICAL_RATE = 0.5   # training and paraphrase: how often the colour is said by its own name
REWORDED_WORD_RATE = 0.5   # reworded: how often each of colour and shape is a held-out word


def template_id(primitive: str, template_set: str, number: int) -> str:
    """Stable id of a template, e.g. ``push_left/heldout/1``."""
    return f'{primitive}/{template_set}/{number}'


def _draw_words(rng: np.random.Generator, color: str, shape: str,
                template_set: str) -> tuple[str, str, str]:
    """(colour word, shape word, id suffix naming the held-out slots)."""
    if template_set == 'reworded':
        new_color = rng.random() < REWORDED_WORD_RATE
        new_shape = rng.random() < REWORDED_WORD_RATE
        colors = REWORDED_COLOR_WORDS[color] if new_color else (color,)
        shapes = REWORDED_SHAPE_WORDS[shape] if new_shape else (shape,)
        suffix = ('+colour' if new_color else '') + ('+shape' if new_shape else '')
    else:
        canonical = rng.random() < CANONICAL_RATE
        colors = (color,) if canonical else COLOR_WORDS[color][1:]
        shapes, suffix = SHAPE_WORDS[shape], ''
    return (colors[int(rng.integers(len(colors)))], shapes[int(rng.integers(len(shapes)))],
            suffix)


def _draw(rng: np.random.Generator, primitive: str, color: str, shape: str,
          template_set: str) -> tuple[str, str]:
    templates = TEMPLATE_SETS[template_set][primitive]
    number = int(rng.integers(len(templates)))
    color_word, shape_word, suffix = _draw_words(rng, color, shape, template_set)
    return (templates[number].format(c=color_word, s=shape_word),
            template_id(primitive, template_set, number) + suffix)


@lru_cache(maxsize=None)
def phrasing_pool(primitive: str, color: str, shape: str, size: int) -> tuple:
    """A fixed set of ``size`` training phrasings of one goal, the same in every run.

    Training draws from these pools instead of the whole grammar (millions of sentences)
    so the frozen text encoder's features are computed once per sentence and cached; val
    still draws from the whole grammar, so it measures new combinations of training words.
    """
    key = f'{primitive}/{color}/{shape}'.encode()
    rng = np.random.default_rng(zlib.crc32(key))
    return tuple(_draw(rng, primitive, color, shape, 'train') for _ in range(size))


def make_instruction(rng: np.random.Generator, primitive: str, color: str, shape: str,
                     template_set: str = 'train', pool: int = 0) -> tuple[str, str]:
    """Draw an instruction for the goal; return (instruction, template id).

    ``pool`` > 0 (training only) draws from :func:`phrasing_pool` of that size.
    """
    if template_set not in TEMPLATE_SETS:
        raise ValueError(f'unknown template set {template_set!r}; expected one of '
                         f'{tuple(TEMPLATE_SETS)}')
    if pool > 0 and template_set == 'train':
        phrasings = phrasing_pool(primitive, color, shape, int(pool))
        return phrasings[int(rng.integers(len(phrasings)))]
    return _draw(rng, primitive, color, shape, template_set)


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


def _table_words(*tables: dict) -> set[str]:
    return {word for table in tables for group in table.values() for word in group}


def training_vocabulary() -> set[str]:
    """Every word training can say: its templates and its colour and shape synonyms."""
    return vocabulary(TRAIN_TEMPLATES) | _table_words(COLOR_WORDS, SHAPE_WORDS)


def reworded_words() -> set[str]:
    """The words only the reworded split says (held-out synonyms and verbs)."""
    return set(REWORDED_VERBS) | _table_words(REWORDED_COLOR_WORDS, REWORDED_SHAPE_WORDS)
