"""A procedural scene world in pure JAX: images of shapes with captions, boxes, referring
expressions, questions and text-to-image prompts, all deterministic functions of a PRNG key.

Shared by the captioning, visual grounding, VQA and text-to-image tasks. ``sample_scenes`` is
jit-able (the config is static) and runs inside a trainer's ``sample_inputs(key)``:

>>> config = SceneConfig()
>>> scenes = jax.jit(sample_scenes, static_argnums=(1, 2))(jax.random.key(0), 8, config)
>>> scenes.images.shape, scenes.captions.shape
((8, 32, 32, 3), (8, 5, 40))
>>> describe(scenes, 0)["captions"][1]  # doctest: +SKIP
'a red circle and a blue square'

The world:

* 1..``max_objects`` objects, each a distinct shape (circle, square, triangle, diamond, cross) in a
  distinct colour (red, green, blue, yellow, purple, pink, cyan), so every object is named
  unambiguously by its shape or its colour; on a grey/black/white/brown background with a
  random gradient and pixel noise.
* Boxes live on a 1000×1000 grid (x0, y0, x1, y1). Each object's size word is its grounding area
  bucket (the paper's): small < 30 000, medium < 100 000, large ≥ 100 000 grid px², one bucket
  drawn uniformly per object. Objects are ordered by area, largest first, and drawn in that
  order, so a small object is never hidden behind a larger one; positions are the best of a few
  random candidates for low overlap, not overlap-free.
* Spatial words come from the box centre in thirds of the image: "at the top left", "on the
  right", "in the center", …
* Texts are built in JAX from template tables: each template is an array of rows of one table
  ``_PHRASES`` of short phrases (a literal word, or a slot such as "the object's colour" whose
  row is chosen per scene), the rows are gathered, and the pads between them squeezed out.

Captions deliberately differ in wording and length (2 to ~38 words with 3 objects): caption 0 is
the canonical full description (also the prompt), 1 and 4 are short lists, 2 is long and
descriptive, 3 counts, 5 lists sizes from left to right.
So a caption optimal for BLEU-1 (short, precise words) and one optimal for ROUGE-L (long common
subsequences) differ.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rs_jax.data.vocab import EOS_ID, PAD_ID, Vocabulary

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple", "pink", "cyan")
COLOUR_RGB = np.array(
    [
        [0.90, 0.10, 0.10],
        [0.10, 0.72, 0.20],
        [0.15, 0.30, 0.95],
        [0.95, 0.88, 0.10],
        [0.58, 0.20, 0.80],
        [1.00, 0.50, 0.75],
        [0.10, 0.85, 0.90],
    ],
    np.float32,
)
BACKGROUNDS = ("grey", "black", "white", "brown")
BACKGROUND_RGB = np.array(
    [[0.50, 0.50, 0.50], [0.08, 0.08, 0.08], [0.92, 0.92, 0.92], [0.45, 0.32, 0.20]], np.float32
)
SIZES = ("small", "medium", "large")
# Box area ranges on the 1000×1000 grid, one per size word, inside the paper's grounding buckets
# (small < 30 000 ≤ medium < 100 000 ≤ large) with margins so aspect rounding never crosses them.
SIZE_AREA_RANGES = np.array([[12_000.0, 28_000.0], [38_000.0, 90_000.0], [115_000.0, 220_000.0]], np.float32)
GRID = 1000.0
MAX_ASPECT = 1.3
NUMBERS = ("one", "two", "three", "four", "five")
# Region r = 3·row + column of the box centre in thirds of the image.
REGION_PHRASES = (
    "at the top left",
    "at the top",
    "at the top right",
    "on the left",
    "in the center",
    "on the right",
    "at the bottom left",
    "at the bottom",
    "at the bottom right",
)
REGION_NAMES = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
QUESTION_TYPES = ("colour", "shape", "count", "exists", "position")
# One answer id space across question types: colours, shapes, counts, yes/no, regions.
ANSWER_NAMES = COLOURS + SHAPES + NUMBERS + ("yes", "no") + REGION_NAMES
_ANSWER_OFFSETS = {
    "colour": 0,
    "shape": len(COLOURS),
    "count": len(COLOURS) + len(SHAPES),
    "exists": len(COLOURS) + len(SHAPES) + len(NUMBERS),
    "position": len(COLOURS) + len(SHAPES) + len(NUMBERS) + 2,
}
_PLACEMENT_CANDIDATES = 16

# ---------------------------------------------------------------------------------------------
# Phrase tables and templates (numpy, built once at import).

# Slot kinds: each is a table of phrases; a template's "{kind}" becomes the phrase at the row the
# scene gives that kind. "join" is "," before a middle object and "and" before the last one;
# "intro", "near", "picture" and "a_picture" are synonyms drawn at random per text.
_SLOT_TABLES: dict[str, tuple[str, ...]] = {
    "colour": COLOURS,
    "shape": SHAPES,
    "size": SIZES,
    "where": REGION_PHRASES,
    "place": REGION_NAMES,
    "bg": BACKGROUNDS,
    "count": NUMBERS,
    "count_shapes": tuple(f"{n} {'shape' if i == 0 else 'shapes'}" for i, n in enumerate(NUMBERS)),
    "there_are": tuple(
        f"there {'is' if i == 0 else 'are'} {n} {'shape' if i == 0 else 'shapes'}"
        for i, n in enumerate(NUMBERS)
    ),
    "yes_no": ("yes", "no"),
    "yes_no_long": ("yes there is", "no there is not"),
    "join": (",", "and"),
    "intro": ("there is", "we can see", "i can see", "this is"),
    "near": ("next to", "near", "beside", "and"),
    "picture": ("picture", "image"),
    "a_picture": ("a picture", "an image"),
}
_SLOT_KINDS = tuple(_SLOT_TABLES)
_KIND_INDEX = {kind: i for i, kind in enumerate(_SLOT_KINDS)}
_RANDOM_KINDS = ("intro", "near", "picture", "a_picture")

# Captions: (intro, first object, every further object, outro, object order).
_CAPTION_STYLES = (
    (
        "",
        "a {size} {colour} {shape} {where}",
        "{join} a {size} {colour} {shape} {where}",
        "on a {bg} background",
        "size",
    ),
    ("", "a {colour} {shape}", "{join} a {colour} {shape}", "", "size"),
    (
        "{intro}",
        "a {size} {colour} {shape} {where} of the {picture}",
        "{near} a {size} {colour} {shape} {where}",
        "on a {bg} background",
        "size",
    ),
    (
        "{a_picture} of {count_shapes} on a {bg} background",
        "with a {colour} {shape} {where}",
        "{join} a {colour} {shape} {where}",
        "",
        "left_to_right",
    ),
    ("", "{colour} {shape}", "{join} {colour} {shape}", "", "left_to_right"),
    (
        "from left to right there is",
        "a {size} {colour} {shape}",
        "{join} a {size} {colour} {shape}",
        "",
        "left_to_right",
    ),
)
_REFERRING_TEMPLATES = (
    "the {colour} {shape}",
    "the {size} {colour} {shape}",
    "the {colour} {shape} {where}",
    "the {size} {colour} {shape} {where}",
)
# Per question type: three wordings of the question, three reference answers (the first is the
# short canonical answer whose class is ``answer_class``).
_QUESTION_TEMPLATES = {
    "colour": (
        (
            "what colour is the {shape} ?",
            "which colour does the {shape} have ?",
            "what is the colour of the {shape} ?",
        ),
        ("{colour}", "it is {colour}", "the {shape} is {colour}"),
    ),
    "shape": (
        ("what shape is the {colour} object ?", "which shape is {colour} ?", "what is the {colour} shape ?"),
        ("{shape}", "a {shape}", "it is a {shape}"),
    ),
    "count": (
        (
            "how many shapes are there ?",
            "how many objects are in the {picture} ?",
            "how many shapes can you see ?",
        ),
        ("{count}", "{count_shapes}", "{there_are}"),
    ),
    "exists": (
        ("is there a {shape} ?", "can you see a {shape} ?", "is there a {shape} in the {picture} ?"),
        ("{yes_no}", "{yes_no}", "{yes_no_long}"),
    ),
    "position": (
        (
            "where is the {colour} {shape} ?",
            "where is the {shape} ?",
            "in which part of the {picture} is the {colour} {shape} ?",
        ),
        ("{place}", "{where}", "it is {where}"),
    ),
}


def _template_words(template: str) -> list[str]:
    return [word for word in template.split() if not (word.startswith("{") and word.endswith("}"))]


def _all_words() -> list[str]:
    words: list[str] = []
    for table in _SLOT_TABLES.values():
        for phrase in table:
            words += phrase.split()
    for style in _CAPTION_STYLES:
        for part in style[:4]:
            words += _template_words(part)
    for template in _REFERRING_TEMPLATES:
        words += _template_words(template)
    for questions, answers in _QUESTION_TEMPLATES.values():
        for template in questions + answers:
            words += _template_words(template)
    return words


@functools.cache
def scene_vocabulary() -> Vocabulary:
    """The fixed vocabulary of every scene text (ids are stable: they follow the tables above)."""
    return Vocabulary.from_words(_all_words())


def _build_phrase_table() -> tuple[np.ndarray, dict[str, int], np.ndarray]:
    """(R, W) token ids of every phrase: row v < vocab size is the single word v (row 0 = pad),
    then each slot kind's phrases; plus each kind's first row and its number of rows."""
    vocab = scene_vocabulary()
    phrases: list[list[int]] = [[v] if v != PAD_ID else [] for v in range(vocab.size)]
    offsets, counts = {}, []
    for kind in _SLOT_KINDS:
        offsets[kind] = len(phrases)
        counts.append(len(_SLOT_TABLES[kind]))
        phrases += [[vocab.id(word) for word in phrase.split()] for phrase in _SLOT_TABLES[kind]]
    width = max(len(phrase) for phrase in phrases)
    table = np.full((len(phrases), width), PAD_ID, np.int32)
    for row, phrase in enumerate(phrases):
        table[row, : len(phrase)] = phrase
    return table, offsets, np.array(counts, np.int32)


_PHRASES, _KIND_OFFSETS, _KIND_SIZES = _build_phrase_table()
_PHRASE_LENGTHS = (_PHRASES != PAD_ID).sum(axis=1)


def _parse(template: str, length: int | None = None) -> np.ndarray:
    """(2, P) [base row, slot kind or -1] of a template; padded with pad rows up to ``length``."""
    vocab = scene_vocabulary()
    base, kind = [], []
    for word in template.split():
        if word.startswith("{") and word.endswith("}"):
            name = word[1:-1]
            base.append(_KIND_OFFSETS[name])
            kind.append(_KIND_INDEX[name])
        else:
            base.append(vocab.id(word))
            kind.append(-1)
    length = len(base) if length is None else length
    return np.array(
        [base + [PAD_ID] * (length - len(base)), kind + [-1] * (length - len(kind))], np.int32
    ).reshape(2, length)


def _parse_all(templates: tuple[str, ...]) -> np.ndarray:
    """(T, 2, P) parsed templates padded to a common length."""
    length = max(1, *(len(t.split()) for t in templates))
    return np.stack([_parse(t, length) for t in templates])


def _max_words(template: str) -> int:
    """Most words a template can expand to."""
    parsed = _parse(template)
    longest_in_kind = {
        _KIND_INDEX[k]: int(_PHRASE_LENGTHS[_KIND_OFFSETS[k] : _KIND_OFFSETS[k] + len(t)].max())
        for k, t in _SLOT_TABLES.items()
    }
    return sum(longest_in_kind[int(k)] if k >= 0 else 1 for k in parsed[1])


def _caption_parts() -> tuple[np.ndarray, ...]:
    """Parsed caption styles: intro (S, 2, Pi), clauses (S, 2, 2, Pc) [first object, others],
    outro (S, 2, Po), and (S,) whether objects go left to right (else largest first)."""
    intros, firsts, rests, outros, orders = zip(*_CAPTION_STYLES)
    clauses = _parse_all(firsts + rests).reshape(2, len(_CAPTION_STYLES), 2, -1).transpose(1, 0, 2, 3)
    left_to_right = np.array([order == "left_to_right" for order in orders])
    return _parse_all(intros), clauses, _parse_all(outros), left_to_right


_CAPTION_INTROS, _CAPTION_CLAUSES, _CAPTION_OUTROS, _CAPTION_LEFT_TO_RIGHT = _caption_parts()
_REFERRING = _parse_all(_REFERRING_TEMPLATES)
_NUM_WORDINGS = 3
_QUESTIONS = _parse_all(tuple(q for t in QUESTION_TYPES for q in _QUESTION_TEMPLATES[t][0])).reshape(
    len(QUESTION_TYPES), _NUM_WORDINGS, 2, -1
)
_ANSWERS = _parse_all(tuple(a for t in QUESTION_TYPES for a in _QUESTION_TEMPLATES[t][1])).reshape(
    len(QUESTION_TYPES), _NUM_WORDINGS, 2, -1
)


# ---------------------------------------------------------------------------------------------
# Config and outputs.


@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """What ``sample_scenes`` draws; hashable, so it can be a static jit argument.

    Attributes:
      image_size: H = W of the images, pixels.
      min_objects, max_objects: objects per scene are uniform in [min, max]; max ≤ 5 (shapes are
        distinct within a scene).
      num_captions: K reference captions per image (caption k has style k mod 6).
      caption_length: L tokens per caption incl. ``<eos>``; longer captions are cut (still
        ``<eos>``-terminated). ``needed_lengths(config)`` gives the lengths that cut nothing.
      referring_length: tokens per referring expression incl. ``<eos>``.
      num_questions: Q questions per image.
      question_types: the types questions are drawn from: question q of a scene has type q mod T of
        a random order of these T types, so no type repeats while Q ≤ T.
      question_length: tokens per question incl. ``<eos>``.
      num_answers: A reference answers per question (answer a has wording a mod 3).
      answer_length: tokens per answer incl. ``<eos>``.
      supersample: anti-aliasing, s×s shape samples per pixel.
      noise_std: standard deviation of the (uniform) pixel noise; image values are in [0, 1].
    """

    image_size: int = 32
    min_objects: int = 1
    max_objects: int = 3
    num_captions: int = 5
    caption_length: int = 40
    referring_length: int = 16
    num_questions: int = 4
    question_types: tuple[str, ...] = QUESTION_TYPES
    question_length: int = 16
    num_answers: int = 3
    answer_length: int = 8
    supersample: int = 2
    noise_std: float = 0.02

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= len(SHAPES):
            raise ValueError(
                f"Need 1 <= min_objects <= max_objects <= {len(SHAPES)} (shapes are distinct within a "
                f"scene), got min_objects={self.min_objects}, max_objects={self.max_objects}."
            )
        if self.image_size < 4:
            raise ValueError(f"image_size must be >= 4 pixels, got {self.image_size}.")
        for name in ("num_captions", "num_questions", "num_answers", "supersample"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("caption_length", "referring_length", "question_length", "answer_length"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be >= 2 (a word and <eos>), got {getattr(self, name)}.")
        types = tuple(self.question_types)
        unknown = [t for t in types if t not in QUESTION_TYPES]
        if not types or unknown:
            raise ValueError(f"question_types must be a non-empty subset of {QUESTION_TYPES}, got {types}.")
        object.__setattr__(self, "question_types", types)
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}.")


# The fields that make each kind of text minimal: one text of 2 tokens (a word and ``<eos>``).
_MINIMAL_TEXTS = {
    "captions": {"num_captions": 1, "caption_length": 2},
    "referring": {"referring_length": 2},
    "questions": {"num_questions": 1, "question_length": 2, "num_answers": 1, "answer_length": 2},
}


def reading_config(texts: str, **fields: Any) -> SceneConfig:
    """The ``SceneConfig`` of ``fields`` for a task that reads only one kind of ``texts``
    ("captions", "referring" or "questions" with their answers): the other kinds are minimal (one
    text of 2 tokens), which compiles faster.

    Raises:
      ValueError: on an unknown kind of text.
    """
    if texts not in _MINIMAL_TEXTS:
        raise ValueError(f"texts must be one of {sorted(_MINIMAL_TEXTS)}, got {texts!r}.")
    minimal = {
        field: value
        for kind, kept in _MINIMAL_TEXTS.items()
        if kind != texts
        for field, value in kept.items()
    }
    return SceneConfig(**(minimal | fields))


def needed_lengths(config: SceneConfig) -> dict[str, int]:
    """Token lengths (incl. ``<eos>``) that hold the longest possible text of each field, so
    that nothing is cut: compare with the ``*_length`` fields of ``config``."""
    captions = max(
        _max_words(intro)
        + _max_words(first)
        + (config.max_objects - 1) * _max_words(rest)
        + _max_words(outro)
        for intro, first, rest, outro, _ in _CAPTION_STYLES[: config.num_captions]
    )
    types = config.question_types
    return {
        "caption_length": captions + 1,
        "referring_length": max(map(_max_words, _REFERRING_TEMPLATES)) + 1,
        "question_length": max(_max_words(q) for t in types for q in _QUESTION_TEMPLATES[t][0]) + 1,
        "answer_length": max(_max_words(a) for t in types for a in _QUESTION_TEMPLATES[t][1]) + 1,
    }


class SceneObjects(NamedTuple):
    """Attributes of the M = ``max_objects`` object slots; slots ``>= num_objects`` are absent.

    Slots are ordered by box area, largest first (the drawing order).

    Attributes:
      shape: (B, M) int32 index into ``SHAPES``.
      colour: (B, M) int32 index into ``COLOURS``.
      size: (B, M) int32 index into ``SIZES`` = grounding area bucket of the box.
      region: (B, M) int32 3·row + column of the box centre in thirds (index into ``REGION_NAMES``).
      present: (B, M) bool.
    """

    shape: jax.Array
    colour: jax.Array
    size: jax.Array
    region: jax.Array
    present: jax.Array


class Scenes(NamedTuple):
    """A batch of B scenes (a pytree; every leaf has leading axis B).

    Token ids are of ``scene_vocabulary()``: left-aligned, ``<eos>``-terminated, ``<pad>``-padded.

    Attributes:
      images: (B, H, W, 3) float32 in [0, 1].
      objects: ``SceneObjects`` of the M object slots.
      boxes: (B, M, 4) float32 x0, y0, x1, y1 on the 1000×1000 grid (zeros for absent slots).
      num_objects: (B,) int32.
      background: (B,) int32 index into ``BACKGROUNDS``.
      captions: (B, K, L) int32 reference captions.
      referring: (B, M, Lr) int32 one referring expression per object slot (all pad if absent).
      referring_valid: (B, M) bool, the slot holds an object; its target is ``boxes[:, m]``.
      questions: (B, Q, Lq) int32.
      question_type: (B, Q) int32 index into ``QUESTION_TYPES``.
      answers: (B, Q, A, La) int32 reference answers, differently worded.
      answer_class: (B, Q) int32 index into ``ANSWER_NAMES`` (for exact-match accuracy).
      prompts: (B, L) int32 canonical caption (caption 0), a text-to-image prompt.
    """

    images: jax.Array
    objects: SceneObjects
    boxes: jax.Array
    num_objects: jax.Array
    background: jax.Array
    captions: jax.Array
    referring: jax.Array
    referring_valid: jax.Array
    questions: jax.Array
    question_type: jax.Array
    answers: jax.Array
    answer_class: jax.Array
    prompts: jax.Array


# ---------------------------------------------------------------------------------------------
# Rendering.


def object_masks(boxes: jax.Array, shapes: jax.Array, image_size: int, supersample: int = 2) -> jax.Array:
    """Fraction of each pixel covered by each object, from s×s samples per pixel.

    Every shape touches all four sides of its box, so the box is tight.

    Args:
      boxes: (M, 4) x0, y0, x1, y1 on the 1000×1000 grid.
      shapes: (M,) int index into ``SHAPES``.
      image_size: H = W in pixels.
      supersample: s.

    Returns:
      (M, H, W) float32 coverage in [0, 1].
    """
    fine = image_size * supersample
    centres = (jnp.arange(fine, dtype=jnp.float32) + 0.5) * (GRID / fine)
    x = centres[None, None, :]
    y = centres[None, :, None]
    boxes = boxes.astype(jnp.float32)
    half_w = jnp.maximum((boxes[:, 2] - boxes[:, 0]) / 2, 1e-3)[:, None, None]
    half_h = jnp.maximum((boxes[:, 3] - boxes[:, 1]) / 2, 1e-3)[:, None, None]
    # u, v: coordinates relative to the box, the box being [-1, 1]².
    u = (x - ((boxes[:, 0] + boxes[:, 2]) / 2)[:, None, None]) / half_w
    v = (y - ((boxes[:, 1] + boxes[:, 3]) / 2)[:, None, None]) / half_h
    au, av = jnp.abs(u), jnp.abs(v)
    inside = (au <= 1) & (av <= 1)
    thin = 1.0 / 3.0
    by_shape = jnp.stack(
        [
            u * u + v * v <= 1,  # circle (an ellipse when the box is not square)
            inside,  # square
            inside & (au <= (v + 1) / 2),  # triangle, apex at the top
            au + av <= 1,  # diamond
            inside & ((av <= thin) | (au <= thin)),  # cross
        ]
    )
    chosen = jnp.take_along_axis(by_shape, shapes.astype(jnp.int32)[None, :, None, None], axis=0)[0]
    coverage = chosen.astype(jnp.float32).reshape(-1, image_size, supersample, image_size, supersample)
    return coverage.mean(axis=(2, 4))


def render(
    boxes: jax.Array,
    shapes: jax.Array,
    colours_rgb: jax.Array,
    present: jax.Array,
    background: jax.Array,
    supersample: int = 2,
) -> jax.Array:
    """Draws objects in slot order (later on top) over a background image of one scene.

    Args:
      boxes: (M, 4) x0, y0, x1, y1 on the 1000×1000 grid.
      shapes: (M,) int index into ``SHAPES``.
      colours_rgb: (M, 3) float RGB in [0, 1] (e.g. ``COLOUR_RGB[colour]``).
      present: (M,) bool; absent slots are not drawn.
      background: (H, W, 3) float image, H = W.
      supersample: anti-aliasing, s×s samples per pixel.

    Returns:
      (H, W, 3) float32 image.
    """
    coverage = object_masks(boxes, shapes, background.shape[0], supersample)
    coverage = coverage * present.astype(jnp.float32)[:, None, None]
    image = background.astype(jnp.float32)
    for m in range(boxes.shape[0]):
        alpha = coverage[m][:, :, None]
        image = image * (1 - alpha) + colours_rgb[m][None, None, :] * alpha
    return image


def _background(
    background_id: jax.Array, jitter: jax.Array, gradient: jax.Array, image_size: int
) -> jax.Array:
    """(H, W, 3) base colour ± jitter plus a linear gradient; ``jitter`` (3,) and ``gradient``
    (2,) [direction, strength] are uniforms in [0, 1)."""
    base = jnp.asarray(BACKGROUND_RGB)[background_id] + 0.1 * (jitter - 0.5)
    angle = 2 * jnp.pi * gradient[0]
    strength = 0.25 * gradient[1]
    coords = (jnp.arange(image_size, dtype=jnp.float32) + 0.5) / image_size - 0.5
    ramp = jnp.cos(angle) * coords[None, :] + jnp.sin(angle) * coords[:, None]
    # Brighten dark backgrounds and darken light ones, so the colour stays near its name.
    direction = jnp.where(base.mean() < 0.5, 1.0, -1.0)
    shade = direction * strength * (ramp + 0.5)
    return jnp.clip(base[None, None, :] + shade[:, :, None], 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Sampling one scene.
#
# All randomness of a scene comes from ONE uniform draw, cut into named pieces: every
# jax.random call adds a threefry hash to the program, and dozens of them made compilation
# take tens of seconds on CPU.


def _draw_shapes(config: SceneConfig) -> dict[str, tuple[int, ...]]:
    M, K, Q, R = config.max_objects, config.num_captions, config.num_questions, len(_RANDOM_KINDS)
    return {
        "num_objects": (),
        "shape_order": (len(SHAPES),),
        "colour_order": (len(COLOURS),),
        "size": (M,),
        "area": (M,),
        "aspect": (M,),
        "placement": (M, _PLACEMENT_CANDIDATES, 2),
        "background": (),
        "background_jitter": (3,),
        "gradient": (2,),
        "colour_jitter": (M, 3),
        "noise": (config.image_size, config.image_size, 3),
        "caption_synonyms": (K, R),
        "referring_template": (M,),
        "referring_synonyms": (M, R),
        "question_type": (len(config.question_types),),
        "question_target": (Q,),
        "question_wording": (Q,),
        "ask_present_shape": (Q,),
        "absent_shape": (Q, len(SHAPES)),
        "question_synonyms": (Q, R),
    }


def _draw(key: jax.Array, config: SceneConfig) -> dict[str, jax.Array]:
    """Named uniforms in [0, 1) of one scene, shaped as ``_draw_shapes`` says."""
    shapes = _draw_shapes(config)
    sizes = [math.prod(shape) for shape in shapes.values()]
    uniforms = jax.random.uniform(key, (sum(sizes),))
    draws, start = {}, 0
    for (name, shape), size in zip(shapes.items(), sizes):
        draws[name] = uniforms[start : start + size].reshape(shape)
        start += size
    return draws


def _choice(uniform: jax.Array, count: jax.Array | int) -> jax.Array:
    """Uniform integers in [0, count) from uniforms in [0, 1)."""
    return jnp.minimum(jnp.floor(uniform * count), count - 1).astype(jnp.int32)


class _Layout(NamedTuple):
    shape: jax.Array  # (M,)
    colour: jax.Array  # (M,)
    size: jax.Array  # (M,)
    region: jax.Array  # (M,)
    present: jax.Array  # (M,)
    boxes: jax.Array  # (M, 4)
    num_objects: jax.Array  # ()
    background: jax.Array  # ()


def _intersection(boxes: jax.Array, others: jax.Array) -> jax.Array:
    """Overlap areas of (C, 4) boxes with (J, 4) boxes -> (C, J)."""
    width = jnp.minimum(boxes[:, None, 2], others[None, :, 2]) - jnp.maximum(
        boxes[:, None, 0], others[None, :, 0]
    )
    height = jnp.minimum(boxes[:, None, 3], others[None, :, 3]) - jnp.maximum(
        boxes[:, None, 1], others[None, :, 1]
    )
    return jnp.maximum(width, 0) * jnp.maximum(height, 0)


def _sample_layout(draws: dict[str, jax.Array], config: SceneConfig) -> _Layout:
    M = config.max_objects
    num_objects = config.min_objects + _choice(
        draws["num_objects"], config.max_objects - config.min_objects + 1
    )
    present = jnp.arange(M) < num_objects
    shape = jnp.argsort(draws["shape_order"])[:M]
    colour = jnp.argsort(draws["colour_order"])[:M]
    size = _choice(draws["size"], len(SIZES))
    low, high = jnp.asarray(SIZE_AREA_RANGES)[size].T
    area = low + (high - low) * draws["area"]
    aspect = jnp.exp(np.log(MAX_ASPECT) * (2 * draws["aspect"] - 1))
    width = jnp.sqrt(area * aspect)
    height = area / width

    # Present objects first, then largest first: sorting the present set itself by area would
    # leave small objects absent more often than large ones.
    order = jnp.argsort(jnp.where(present, -area, 0.0))
    shape, colour, size, width, height = (a[order] for a in (shape, colour, size, width, height))

    # Each object takes the least-overlapping of a few random positions, given the larger ones.
    placed: list[jax.Array] = []
    for m in range(M):
        unit = draws["placement"][m]
        cx = width[m] / 2 + unit[:, 0] * (GRID - width[m])
        cy = height[m] / 2 + unit[:, 1] * (GRID - height[m])
        candidates = jnp.stack(
            [cx - width[m] / 2, cy - height[m] / 2, cx + width[m] / 2, cy + height[m] / 2], -1
        )
        best = 0 if m == 0 else jnp.argmin(_intersection(candidates, jnp.stack(placed)).sum(axis=1))
        placed.append(candidates[best])
    boxes = jnp.stack(placed) * present[:, None].astype(jnp.float32)

    column = jnp.clip(jnp.floor((boxes[:, 0] + boxes[:, 2]) / 2 / (GRID / 3)), 0, 2).astype(jnp.int32)
    row = jnp.clip(jnp.floor((boxes[:, 1] + boxes[:, 3]) / 2 / (GRID / 3)), 0, 2).astype(jnp.int32)
    return _Layout(
        shape=shape.astype(jnp.int32),
        colour=colour.astype(jnp.int32),
        size=size,
        region=3 * row + column,
        present=present,
        boxes=boxes,
        num_objects=num_objects,
        background=_choice(draws["background"], len(BACKGROUNDS)),
    )


def _object_values(layout: _Layout) -> jax.Array:
    """(M, num kinds) the phrase row of every slot kind for each object (scene-level kinds too;
    "join", "yes_no" and the synonyms are 0 here and set by the caller)."""
    M = layout.shape.shape[0]
    count = jnp.broadcast_to(layout.num_objects - 1, (M,))
    columns = {
        "colour": layout.colour,
        "shape": layout.shape,
        "size": layout.size,
        "where": layout.region,
        "place": layout.region,
        "bg": jnp.broadcast_to(layout.background, (M,)),
        "count": count,
        "count_shapes": count,
        "there_are": count,
    }
    zeros = jnp.zeros((M,), jnp.int32)
    return jnp.stack([columns.get(kind, zeros).astype(jnp.int32) for kind in _SLOT_KINDS], axis=-1)


# Rows are overwritten with dense `where`s rather than `.at[].set`: batched scatters compile slowly
# on CPU.
def _kind_mask(kinds: tuple[str, ...], ndim: int) -> np.ndarray:
    """(1, …, 1, num kinds) bool, True at ``kinds``."""
    mask = np.isin(np.arange(len(_SLOT_KINDS)), [_KIND_INDEX[kind] for kind in kinds])
    return mask.reshape((1,) * (ndim - 1) + (-1,))


def _set_kind(values: jax.Array, kind: str, rows: jax.Array) -> jax.Array:
    """``values`` (..., num kinds) with the row of ``kind`` set to ``rows`` (...)."""
    return jnp.where(_kind_mask((kind,), values.ndim), rows[..., None], values)


def _set_synonyms(values: jax.Array, uniforms: jax.Array) -> jax.Array:
    """``values`` (..., num kinds) with a random synonym row per random kind, from (..., R) uniforms
    (leading axes broadcast)."""
    sizes = _KIND_SIZES[[_KIND_INDEX[kind] for kind in _RANDOM_KINDS]]
    rows = _choice(uniforms, jnp.asarray(sizes).reshape((1,) * (uniforms.ndim - 1) + (-1,)))
    # Column k of the result takes random row number slot[k] (the extra zero column elsewhere).
    slot = [
        _RANDOM_KINDS.index(kind) if kind in _RANDOM_KINDS else len(_RANDOM_KINDS) for kind in _SLOT_KINDS
    ]
    spread = jnp.concatenate([rows, jnp.zeros_like(rows[..., :1])], axis=-1)[..., np.array(slot)]
    return jnp.where(_kind_mask(_RANDOM_KINDS, values.ndim), spread, values)


def _fill(parsed: jax.Array, values: jax.Array) -> jax.Array:
    """Templates (..., 2, P) with slot rows (..., num kinds) -> phrase-table rows (..., P)."""
    base, kind = parsed[..., 0, :], parsed[..., 1, :]
    chosen = jnp.take_along_axis(values, jnp.maximum(kind, 0), axis=-1)
    return base + jnp.where(kind >= 0, chosen, 0)


def _squeeze(rows: jax.Array, length: int) -> jax.Array:
    """Phrase-table rows (..., P) -> (..., length) token ids: the words left-aligned, ``<eos>``, pads."""
    tokens = jnp.asarray(_PHRASES)[rows]
    tokens = tokens.reshape(*tokens.shape[:-2], -1)  # (..., T) with pads between words
    keep = tokens != PAD_ID
    position = jnp.cumsum(keep, axis=-1) - 1
    # Output slot j takes the kept token at position j: a one-hot sum, which compiles and runs
    # faster on CPU than a batched scatter.
    lead = (1,) * (tokens.ndim - 1)
    slots = jnp.arange(length).reshape(*lead, length)
    lands = keep[..., None, :] & (position[..., None, :] == slots[..., None])  # (..., length, T)
    out = jnp.sum(jnp.where(lands, tokens[..., None, :], 0), axis=-1)
    end = jnp.minimum(keep.sum(axis=-1), length - 1)
    return jnp.where(slots == end[..., None], EOS_ID, out).astype(jnp.int32)


def _captions(draws: dict[str, jax.Array], layout: _Layout, config: SceneConfig) -> jax.Array:
    """(K, L) captions; caption k has style k mod S."""
    M, K = config.max_objects, config.num_captions
    styles = np.arange(K) % len(_CAPTION_STYLES)
    values = _set_synonyms(
        jnp.broadcast_to(_object_values(layout)[None], (K, M, len(_SLOT_KINDS))),
        draws["caption_synonyms"][:, None, :],
    )
    centre_x = (layout.boxes[:, 0] + layout.boxes[:, 2]) / 2
    left_to_right = jnp.argsort(jnp.where(layout.present, centre_x, 2 * GRID))
    order = jnp.where(_CAPTION_LEFT_TO_RIGHT[styles][:, None], left_to_right[None, :], jnp.arange(M)[None, :])
    ordered = jnp.take_along_axis(values, order[:, :, None], axis=1)
    # Before the last object "join" is "and", before the middle ones ",".
    ordered = _set_kind(ordered, "join", (jnp.arange(M) == layout.num_objects - 1).astype(jnp.int32)[None, :])

    clause_templates = _CAPTION_CLAUSES[styles][:, np.minimum(np.arange(M), 1)]  # (K, M, 2, Pc)
    clauses = jnp.where(layout.present[None, :, None], _fill(clause_templates, ordered), PAD_ID)
    intros = _fill(_CAPTION_INTROS[styles], ordered[:, 0])
    outros = _fill(_CAPTION_OUTROS[styles], ordered[:, 0])
    rows = jnp.concatenate([intros, clauses.reshape(K, -1), outros], axis=-1)
    return _squeeze(rows, config.caption_length)


def _referring(draws: dict[str, jax.Array], layout: _Layout, config: SceneConfig) -> jax.Array:
    """(M, Lr) one referring expression per object slot, all pad for absent slots."""
    templates = jnp.asarray(_REFERRING)[_choice(draws["referring_template"], len(_REFERRING))]
    values = _set_synonyms(_object_values(layout), draws["referring_synonyms"])
    expressions = _squeeze(_fill(templates, values), config.referring_length)
    return jnp.where(layout.present[:, None], expressions, PAD_ID)


def _questions(draws: dict[str, jax.Array], layout: _Layout, config: SceneConfig) -> tuple[jax.Array, ...]:
    """(Q, Lq) questions, (Q,) types, (Q, A, La) answers, (Q,) answer classes."""
    allowed = jnp.asarray([QUESTION_TYPES.index(t) for t in config.question_types], jnp.int32)
    # Question q has type number q (mod the number of types) of a random order: no type repeats
    # while Q ≤ the number of allowed types.
    type_order = jnp.argsort(draws["question_type"])
    question_type = allowed[type_order[np.arange(config.num_questions) % len(allowed)]]
    target = _choice(draws["question_target"], layout.num_objects)

    # "is there a <shape>?": half the time a shape of the scene, else one it lacks.
    shapes_present = (
        (layout.shape[:, None] == jnp.arange(len(SHAPES))[None, :]) & layout.present[:, None]
    ).any(0)
    absent_shape = jnp.argmax(jnp.where(shapes_present[None, :], -1.0, draws["absent_shape"]), axis=-1)
    ask_present = (draws["ask_present_shape"] < 0.5) | shapes_present.all()
    is_exists = question_type == QUESTION_TYPES.index("exists")
    asked_shape = jnp.where(is_exists & ~ask_present, absent_shape, layout.shape[target]).astype(jnp.int32)
    answer_no = (~shapes_present[asked_shape]).astype(jnp.int32)

    values = _set_synonyms(_object_values(layout)[target], draws["question_synonyms"])
    values = _set_kind(values, "shape", asked_shape)
    values = _set_kind(_set_kind(values, "yes_no", answer_no), "yes_no_long", answer_no)
    wording = _choice(draws["question_wording"], _NUM_WORDINGS)
    questions = _squeeze(
        _fill(jnp.asarray(_QUESTIONS)[question_type, wording], values), config.question_length
    )

    answer_wordings = np.arange(config.num_answers) % _NUM_WORDINGS
    answer_templates = jnp.asarray(_ANSWERS)[question_type][:, answer_wordings]  # (Q, A, 2, P)
    answer_values = jnp.broadcast_to(values[:, None, :], (*answer_templates.shape[:2], values.shape[-1]))
    answers = _squeeze(_fill(answer_templates, answer_values), config.answer_length)

    class_within_type = jnp.stack(
        [
            layout.colour[target],
            asked_shape,
            layout.num_objects - jnp.ones_like(target),
            answer_no,
            layout.region[target],
        ],
        axis=-1,
    )
    class_within_type = jnp.take_along_axis(class_within_type, question_type[:, None], axis=-1)[:, 0]
    offsets = jnp.asarray([_ANSWER_OFFSETS[t] for t in QUESTION_TYPES], jnp.int32)
    return questions, question_type, answers, offsets[question_type] + class_within_type


def _sample_scene(key: jax.Array, config: SceneConfig) -> Scenes:
    draws = _draw(key, config)
    layout = _sample_layout(draws, config)
    background = _background(
        layout.background, draws["background_jitter"], draws["gradient"], config.image_size
    )
    colours_rgb = jnp.clip(
        jnp.asarray(COLOUR_RGB)[layout.colour] + 0.1 * (draws["colour_jitter"] - 0.5), 0.0, 1.0
    )
    image = render(layout.boxes, layout.shape, colours_rgb, layout.present, background, config.supersample)
    # Uniform noise with standard deviation noise_std.
    image = jnp.clip(image + config.noise_std * np.sqrt(12.0) * (draws["noise"] - 0.5), 0.0, 1.0)

    captions = _captions(draws, layout, config)
    questions, question_type, answers, answer_class = _questions(draws, layout, config)
    return Scenes(
        images=image,
        objects=SceneObjects(
            shape=layout.shape,
            colour=layout.colour,
            size=layout.size,
            region=layout.region,
            present=layout.present,
        ),
        boxes=layout.boxes,
        num_objects=layout.num_objects,
        background=layout.background,
        captions=captions,
        referring=_referring(draws, layout, config),
        referring_valid=layout.present,
        questions=questions,
        question_type=question_type,
        answers=answers,
        answer_class=answer_class,
        prompts=captions[0],
    )


def sample_scenes(key: jax.Array, batch_size: int, config: SceneConfig = SceneConfig()) -> Scenes:
    """Draws ``batch_size`` scenes; scene i depends only on ``(key, i)``, not on the batch size.

    Pure and jit-able with ``static_argnums=(1, 2)``; vmap over keys for several batches.

    Args:
      key: a PRNG key, raw (uint32[2]) or typed.
      batch_size: B.
      config: a ``SceneConfig`` (static).

    Returns:
      ``Scenes`` with leading axis B (see its docstring for every field's shape).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    scene_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch_size))
    return jax.vmap(lambda k: _sample_scene(k, config))(scene_keys)


# ---------------------------------------------------------------------------------------------
# Host helpers.


def describe(scenes: Scenes, index: int, vocab: Vocabulary | None = None) -> dict[str, Any]:
    """Everything of scene ``index`` as plain Python strings and numbers (for debugging, figures).

    Returns:
      dict with "background", "objects" (list of dicts: shape, colour, size, region, box),
      "captions", "prompt", "referring" (list of dicts: text, box), "questions" (list of dicts:
      type, question, answers, answer_class, answer).
    """
    vocab = scene_vocabulary() if vocab is None else vocab
    scene = jax.tree.map(lambda leaf: np.asarray(leaf[index]), scenes)
    present = scene.objects.present
    objects = [
        {
            "shape": SHAPES[scene.objects.shape[m]],
            "colour": COLOURS[scene.objects.colour[m]],
            "size": SIZES[scene.objects.size[m]],
            "region": REGION_NAMES[scene.objects.region[m]],
            "box": [round(float(c), 1) for c in scene.boxes[m]],
        }
        for m in range(present.shape[0])
        if present[m]
    ]
    return {
        "background": BACKGROUNDS[int(scene.background)],
        "objects": objects,
        "captions": [vocab.decode(caption) for caption in scene.captions],
        "prompt": vocab.decode(scene.prompts),
        "referring": [
            {"text": vocab.decode(scene.referring[m]), "box": [round(float(c), 1) for c in scene.boxes[m]]}
            for m in range(present.shape[0])
            if scene.referring_valid[m]
        ],
        "questions": [
            {
                "type": QUESTION_TYPES[scene.question_type[q]],
                "question": vocab.decode(scene.questions[q]),
                "answers": [vocab.decode(answer) for answer in scene.answers[q]],
                "answer_class": int(scene.answer_class[q]),
                "answer": ANSWER_NAMES[scene.answer_class[q]],
            }
            for q in range(scene.questions.shape[0])
        ],
    }


class ObjectNaming(NamedTuple):
    """How well captions name a batch of scenes' objects: "colour shape" word pairs (the order of
    every caption style) matched against the scenes' objects.

    Attributes:
      pair_right: (B, T) bool, position t starts a colour-shape pair that is an object of the scene.
      pair_named: (B, T) bool, position t starts a colour-shape pair.
      object_named: (B, M) bool, the slot's object is named by its colour and shape somewhere.
      present: (B, M) bool, the slot holds an object.
    """

    pair_right: jax.Array
    pair_named: jax.Array
    object_named: jax.Array
    present: jax.Array


def object_naming(tokens: jax.Array, objects: SceneObjects) -> ObjectNaming:
    """The colour-shape pairs of captions ``tokens`` (B, T) ids of ``scene_vocabulary()``, matched
    against ``objects`` of the same B scenes: precision is ``pair_right.sum() / pair_named.sum()``,
    recall ``object_named.sum() / present.sum()``."""
    vocabulary = scene_vocabulary()
    colour_of = np.full(vocabulary.size, -1, np.int32)
    shape_of = np.full(vocabulary.size, -1, np.int32)
    colour_of[[vocabulary.id(word) for word in COLOURS]] = np.arange(len(COLOURS))
    shape_of[[vocabulary.id(word) for word in SHAPES]] = np.arange(len(SHAPES))
    colours, shapes = jnp.asarray(colour_of)[tokens[:, :-1]], jnp.asarray(shape_of)[tokens[:, 1:]]
    named = (colours >= 0) & (shapes >= 0)  # (B, T-1)
    matches = (  # (B, T-1, M): the pair at t is the object in slot m
        named[:, :, None]
        & (colours[:, :, None] == objects.colour[:, None, :])
        & (shapes[:, :, None] == objects.shape[:, None, :])
        & objects.present[:, None, :]
    )
    pad = jnp.zeros((tokens.shape[0], 1), bool)
    return ObjectNaming(
        pair_right=jnp.concatenate([matches.any(axis=2), pad], axis=1),
        pair_named=jnp.concatenate([named, pad], axis=1),
        object_named=matches.any(axis=1),
        present=objects.present,
    )
