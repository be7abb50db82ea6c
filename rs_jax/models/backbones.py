"""The unified image+text → tokens backbones of the grounding and VQA tasks: one interface, chosen by name.

A ``Backbone`` holds the few functions that differ between models, each the function of the same
name in the model's module (building, loading and initializing one, its special ids and default
token mask, teacher-forced logits, the start of cached decoding), and derives from them, once for
every backbone, what a task calls: allowed-token masks, log-probabilities, the cross-entropies and
``sample_outputs``. Every function takes the model first and its params explicitly, so soups, LoRA
and the trainer see a plain pytree.

``VIT_GPT2`` (``"vit-gpt2"``) is ``rs_jax.models.unified`` (ViT encoder, GPT-2 decoder reading the
text as its prompt); ``BART`` (``"bart"``) is ``rs_jax.models.bart_unified`` (BART encoder-decoder +
ViT). Sampled log-probabilities equal teacher-forced ones under the same ``allowed`` mask.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, Unpack

import jax
import jax.numpy as jnp
import numpy as np

from rs_jax.models import bart_unified, captioner, locations, sampling, unified

if TYPE_CHECKING:
    from transformers import FlaxVisionEncoderDecoderModel

PyTree = Any
ModelT = TypeVar("ModelT")


@dataclasses.dataclass(frozen=True)
class Backbone(Generic[ModelT]):
    """A unified image+text → tokens backbone.

    Images are (B, H, W, 3) in [0, 1]; prompts (B, Lp) left-aligned, ``<eos>``-ended and
    ``<pad>``-padded token ids; outputs (B, L) token ids; V is the vocabulary size.

    Attributes:
      name: the configs' ``backbone`` value.
      tiny: ``(vocab_size, size: captioner.ModelSize, *, prompt_length, output_length,
        special_ids: (bos, eos, pad), encoder_init_scale) -> model`` of a small config, without
        params.
      load: ``(model_dir, vision_dir, *, key) -> (model, params)`` from local HF directories
        (``key`` draws what a directory lacks).
      init_params: ``(model, key, *, first_location_id=None, num_bins, location_scale) -> params``,
        with coordinate-aware codes for the location tokens when ``first_location_id`` is given.
      vocab_size: ``model -> V``.
      special_ids: ``model -> (decoder start, <eos>, <pad>)`` ids.
      default_allowed: ``model -> (V,) bool``, the tokens a policy may emit when no mask is given.
      output_logits: ``(model, params, images, prompts, outputs) -> (B, L, V)`` logits of output t
        given outputs₍<t₎, by teacher forcing.
      start_decoding: ``(model, params, images, prompts, max_length) -> (step, cache, first
        tokens (B,))`` for ``sampling.sample``; ``step`` returns the unmasked (B, V) logits.
    """

    name: str
    tiny: Callable[..., ModelT]
    load: Callable[..., tuple[ModelT, PyTree]]
    init_params: Callable[..., PyTree]
    vocab_size: Callable[[ModelT], int]
    special_ids: Callable[[ModelT], tuple[int, int, int]]
    default_allowed: Callable[[ModelT], np.ndarray]
    output_logits: Callable[[ModelT, PyTree, jax.Array, jax.Array, jax.Array], jax.Array]
    start_decoding: Callable[
        [ModelT, PyTree, jax.Array, jax.Array, int], tuple[sampling.StepFn, PyTree, jax.Array]
    ]

    @classmethod
    def from_module(cls, name: str, module: types.ModuleType) -> Backbone:
        """The backbone whose functions are ``module``'s of the same names (every field but
        ``name``)."""
        functions = (field.name for field in dataclasses.fields(cls) if field.name != "name")
        return cls(name, **{function: getattr(module, function) for function in functions})

    def word_mask(self, model: ModelT, first_location_id: int | None) -> np.ndarray:
        """(V,) bool: ``default_allowed`` without the location tokens (ids from ``first_location_id``
        on): words and ``<eos>``, the tokens of a VQA answer."""
        allowed = self.default_allowed(model).copy()
        if first_location_id is not None:
            allowed[first_location_id:] = False
        return allowed

    def mask_logits(self, model: ModelT, logits: jax.Array, allowed: np.ndarray | None) -> jax.Array:
        """(..., V) logits with -inf wherever the (V,) bool mask ``allowed`` (None:
        ``default_allowed``) is False."""
        allowed = self.default_allowed(model) if allowed is None else allowed
        if np.shape(allowed) != (logits.shape[-1],):
            raise ValueError(
                f"allowed must be a ({logits.shape[-1]},) bool mask; got shape {np.shape(allowed)}."
            )
        return jnp.where(jnp.asarray(allowed), logits, -jnp.inf)

    def token_log_probs(
        self,
        model: ModelT,
        params: PyTree,
        images: jax.Array,
        prompts: jax.Array,
        outputs: jax.Array,
        allowed: np.ndarray | None = None,
    ) -> jax.Array:
        """(B, L) log π(outputₜ | image, prompt, outputs₍<t₎) by teacher forcing, the policy restricted
        to the (V,) bool mask ``allowed`` (None: ``default_allowed``); 0 at ``<pad>``."""
        _, _, pad = self.special_ids(model)
        logits = self.mask_logits(model, self.output_logits(model, params, images, prompts, outputs), allowed)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        chosen = jnp.take_along_axis(log_probs, outputs[..., None].astype(jnp.int32), axis=-1)[..., 0]
        return jnp.where(outputs != pad, chosen, 0.0)

    def sequence_cross_entropy(
        self,
        model: ModelT,
        params: PyTree,
        images: jax.Array,
        prompts: jax.Array,
        targets: jax.Array,
        allowed: np.ndarray | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean cross-entropy (nats) per non-pad token of target outputs (B, L) given image and prompt."""
        _, _, pad = self.special_ids(model)
        log_probs = self.token_log_probs(model, params, images, prompts, targets, allowed)
        loss = -log_probs.sum() / jnp.maximum((targets != pad).sum(), 1)
        return loss, {"cross_entropy": loss}

    def location_cross_entropy(
        self,
        model: ModelT,
        params: PyTree,
        images: jax.Array,
        prompts: jax.Array,
        target_tokens: jax.Array,
        *,
        first_location_id: int,
        num_bins: int,
        sigma: float = 0.0,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Cross-entropy of the 4 location tokens of the true boxes, the policy restricted to location tokens.

        Args:
          target_tokens: (B, 4) true location token ids.
          sigma: > 0 spreads each target over neighbouring bins (``locations.gaussian_bin_targets``);
            0 is the plain cross-entropy on the true tokens.

        Returns:
          (mean cross-entropy per coordinate, metrics with it and the plain one-hot cross-entropy).
        """
        allowed = locations.location_mask(self.vocab_size(model), first_location_id, num_bins)
        logits = self.output_logits(model, params, images, prompts, target_tokens)
        log_probs = jax.nn.log_softmax(self.mask_logits(model, logits, allowed), axis=-1)
        location_log_probs = log_probs[..., first_location_id : first_location_id + num_bins]
        bins = target_tokens - first_location_id
        targets = locations.gaussian_bin_targets(bins, num_bins, sigma)
        loss = -(targets * location_log_probs).sum(axis=-1).mean()
        exact = -jnp.take_along_axis(location_log_probs, bins[..., None], axis=-1).mean()
        return loss, {"cross_entropy": loss, "true_token_cross_entropy": exact}

    def sample_outputs(
        self,
        model: ModelT,
        params: PyTree,
        images: jax.Array,
        prompts: jax.Array,
        key: jax.Array,
        *,
        max_length: int,
        allowed: np.ndarray | None = None,
        stop_at_eos: bool = True,
        **picking: Unpack[sampling.TokenPicking],
    ) -> sampling.Sample:
        """Outputs (B, max_length) sampled (or greedy) for each image and prompt, with a KV cache, in jit.

        Args:
          key: PRNG key.
          max_length: L output tokens.
          allowed: (V,) bool mask of the tokens the policy may emit; None: ``default_allowed``.
          stop_at_eos: rows emit ``<pad>`` after their ``<eos>`` (False for fixed-length outputs such
            as the 4 location tokens).
          **picking: greedy, temperature, top_k, top_p, as ``sampling.sample``.

        Returns:
          A ``sampling.Sample`` whose log-probs equal ``token_log_probs`` of its tokens.
        """
        step, cache, first_tokens = self._start_masked(model, params, images, prompts, max_length, allowed)
        return sampling.sample(
            step,
            cache,
            first_tokens,
            key,
            max_length=max_length,
            **self._stopping(model, stop_at_eos),
            **picking,
        )

    def sample_outputs_mixture(
        self,
        model: ModelT,
        stacked_params: PyTree,
        weights: jax.Array,
        images: jax.Array,
        prompts: jax.Array,
        key: jax.Array,
        *,
        rule: str = "logits",
        max_length: int,
        allowed: np.ndarray | None = None,
        stop_at_eos: bool = True,
        **picking: Unpack[sampling.TokenPicking],
    ) -> sampling.Sample:
        """Outputs (B, max_length) decoded from a mixture of N param sets (``sampling.sample_mixture``).

        Each member's logits are masked to ``allowed`` before mixing. ``rule="logits"``: every
        token from softmax(Σᵢ wᵢ log pᵢ) (MOD); ``"probs"``: from Σᵢ wᵢ pᵢ (ensembling).

        Args:
          stacked_params: params with a leading axis N (``soup.stack_experts``).
          weights: (N,) non-negative mixing weights.
          The rest: as ``sample_outputs``.

        Returns:
          A ``sampling.Sample``; with a one-hot ``weights`` the tokens of ``sample_outputs`` on that
          member with the same key.
        """
        return sampling.sample_mixture(
            lambda params: self._start_masked(model, params, images, prompts, max_length, allowed),
            stacked_params,
            weights,
            key,
            rule=rule,
            max_length=max_length,
            **self._stopping(model, stop_at_eos),
            **picking,
        )

    def sample_batch(
        self, model: ModelT, params: PyTree, batch: Mapping[str, jax.Array], key: jax.Array, **options: Any
    ) -> jax.Array:
        """(B, max_length) tokens of ``sample_outputs`` for a batch's ``images`` and ``prompts``;
        ``options`` are ``sample_outputs``'s keyword arguments."""
        return self.sample_outputs(model, params, batch["images"], batch["prompts"], key, **options).tokens

    def batch_log_prob(
        self,
        model: ModelT,
        params: PyTree,
        batch: Mapping[str, jax.Array],
        outputs: jax.Array,
        allowed: np.ndarray | None = None,
    ) -> jax.Array:
        """(B,) log π(outputs | image, prompt) of outputs (B, L) for a batch's ``images`` and
        ``prompts``: the sum of ``token_log_probs``."""
        return self.token_log_probs(model, params, batch["images"], batch["prompts"], outputs, allowed).sum(
            axis=-1
        )

    def sample_batch_mixture(
        self,
        model: ModelT,
        stacked_params: PyTree,
        weights: jax.Array,
        batch: Mapping[str, jax.Array],
        key: jax.Array,
        **options: Any,
    ) -> jax.Array:
        """(B, max_length) tokens of ``sample_outputs_mixture`` for a batch's ``images`` and ``prompts``;
        ``options`` are ``sample_outputs_mixture``'s keyword arguments."""
        images, prompts = batch["images"], batch["prompts"]
        return self.sample_outputs_mixture(
            model, stacked_params, weights, images, prompts, key, **options
        ).tokens

    def _stopping(self, model: ModelT, stop_at_eos: bool) -> sampling.Decoding:
        """The ``eos_id`` (None unless ``stop_at_eos``) and ``pad_id`` of ``sampling.sample``."""
        _, eos, pad = self.special_ids(model)
        return sampling.Decoding(eos_id=eos if stop_at_eos else None, pad_id=pad)

    def _start_masked(self, model, params, images, prompts, max_length, allowed):
        """``start_decoding`` whose step (a ``Partial``) masks the logits to ``allowed``."""
        step, cache, first_tokens = self.start_decoding(model, params, images, prompts, max_length)
        masked = jax.tree_util.Partial(
            functools.partial(_masked_step, self.mask_logits, model, allowed), step
        )
        return masked, cache, first_tokens


def _masked_step(mask_logits, model, allowed, step, cache, tokens, step_index):
    logits, cache = step(cache, tokens, step_index)
    return mask_logits(model, logits, allowed), cache


VIT_GPT2: Backbone[FlaxVisionEncoderDecoderModel] = Backbone.from_module("vit-gpt2", unified)
BART: Backbone[bart_unified.BartUnified] = Backbone.from_module("bart", bart_unified)
BACKBONES = {backbone.name: backbone for backbone in (VIT_GPT2, BART)}


class TokenIds(Protocol):
    """What a backbone needs of a task's vocabulary (``rs_jax.data.vocab.Vocabulary`` has it)."""

    size: int
    bos_id: int
    eos_id: int
    pad_id: int


class BackboneSettings(Protocol):
    """The backbone fields of a task config (``configs.UnifiedModelConfig``, which the configs of
    grounding and VQA extend): the backbone's name, local HF directories ("" builds a tiny model),
    the seed that draws what a directory lacks, and the tiny model's sizes."""

    backbone: str
    model: str
    vision_model: str
    seed: int
    image_size: int
    patch_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    encoder_init_scale: float


def select(name: str, model_dir: str = "", vision_dir: str = "") -> Backbone:
    """The backbone of a name, after checking the directories fit it.

    Raises:
      ValueError: on an unknown name, or directories that do not go with it.
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {name!r}.")
    if vision_dir and not (name == BART.name and model_dir):
        raise ValueError("vision_model= is the ViT of backbone=bart with model=<BART directory>.")
    if name == BART.name and model_dir and not vision_dir:
        raise ValueError("backbone=bart with model=<BART directory> needs vision_model=<ViT directory>.")
    return BACKBONES[name]


def build_model(
    config: BackboneSettings, vocabulary: TokenIds, *, prompt_length: int, output_length: int
) -> tuple[Backbone, Any, PyTree | None]:
    """The backbone, its model and pre-trained params (None for a fresh tiny model).

    Args:
      config: a task config's backbone fields (``BackboneSettings``).
      vocabulary: the task's tokens (a loaded model must have exactly this many).
      prompt_length / output_length: token budget of the tiny model's positions.

    Raises:
      ValueError: on a bad backbone choice or a loaded model whose vocabulary size differs.
    """
    backbone = select(config.backbone, config.model, config.vision_model)
    if config.model:
        model, pretrained = backbone.load(
            config.model, config.vision_model, key=jax.random.PRNGKey(config.seed)
        )
        if backbone.vocab_size(model) != vocabulary.size:
            raise ValueError(
                f"{config.model} has {backbone.vocab_size(model)} tokens; this task's vocabulary has "
                f"{vocabulary.size}."
            )
        return backbone, model, pretrained
    size = captioner.ModelSize(
        config.image_size, config.patch_size, config.hidden_size, config.num_layers, config.num_heads
    )
    model = backbone.tiny(
        vocabulary.size,
        size,
        prompt_length=prompt_length,
        output_length=output_length,
        special_ids=(vocabulary.bos_id, vocabulary.eos_id, vocabulary.pad_id),
        encoder_init_scale=config.encoder_init_scale,
    )
    return backbone, model, None
