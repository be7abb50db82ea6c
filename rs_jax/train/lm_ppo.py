"""PPO for language models with a KL penalty to the frozen reference (RLHF), a learner of the one trainer.

The trl recipe the paper uses (Appendix C), on a LoRA policy:

* ``collect``: sample prompts, generate a response per prompt with the policy
  π = base + LoRA (KV cache, inside jit), score it with the reward components (the
  scalar reward is ``reward_weights · components``), compute per-token log-probs of
  π and of the reference π_ref = the base without LoRA (no second copy of the base),
  per-token rewards ``-β·(log π − log π_ref)`` plus the score on the last token, values
  from a value head on the policy's last hidden states, GAE over tokens and whitened
  advantages. β is fixed or adapted towards a target KL (Ziegler et al. 2019), kept
  in the learner's carry.
* ``loss``: clipped surrogate on the token ratios + clipped value loss, masked to the
  response tokens.

Trainable params are ``{"lora": …, "value_head": …}``. The learner is a pytree whose leaves
are the frozen base params (and any arrays that ``sample_prompts`` / ``reward_components``
hold as ``jax.tree_util.Partial``), so the trainer passes them to the compiled update as
operands instead of embedding them as constants (``rs_jax.operands``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rs_jax.models import causal_lm, lora
from rs_jax.train import normalizer
from rs_jax.train.ppo import gae

PyTree = Any
STATIC = {"static": True}  # field metadata: part of the pytree's structure, not one of its leaves


@dataclasses.dataclass(frozen=True)
class LMPPOConfig:
    """Hyper-parameters (trl's defaults where the paper is silent).

    Attributes:
      max_new_tokens: response length R.
      kl_coef: β of the per-token KL penalty (paper: 0.2, 0.05 for summaries).
      adaptive_kl: adapt β towards ``kl_target`` (nats per response) over ``kl_horizon`` samples.
      discount, gae_lambda: GAE over tokens.
      clip_epsilon: policy ratio clip; value_clip: value clip around the old values.
      value_coef: weight of the value loss.
      whiten_advantages: normalize advantages over the response tokens of the batch.
      score_scaling: divide each score by the running standard deviation of the scores seen so
        far, this batch included (trl's ``use_score_scaling``), so that the KL penalty weighs
        the same against rewards of any scale.
    """

    max_new_tokens: int = 16
    kl_coef: float = 0.2
    adaptive_kl: bool = False
    kl_target: float = 6.0
    kl_horizon: int = 10_000
    discount: float = 1.0
    gae_lambda: float = 0.95
    clip_epsilon: float = 0.2
    value_clip: float = 0.2
    value_coef: float = 0.1
    whiten_advantages: bool = True
    score_scaling: bool = False


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``values`` where ``mask`` is True (0 if none is)."""
    weights = mask.astype(values.dtype)
    return (values * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def masked_whiten(values: jax.Array, mask: jax.Array) -> jax.Array:
    """(values − mean) / std over the masked entries; 0 elsewhere."""
    mean = masked_mean(values, mask)
    variance = masked_mean(jnp.square(values - mean), mask)
    return jnp.where(mask, (values - mean) * jax.lax.rsqrt(variance + 1e-8), 0.0)


def token_rewards(score: jax.Array, kl: jax.Array, mask: jax.Array, kl_coef: jax.Array) -> jax.Array:
    """Per-token rewards: −β·KLₜ everywhere, plus the sequence score on the last response token.

    Args:
      score: (B,) scalar reward of each response.
      kl: (B, R) log π − log π_ref per token.
      mask: (B, R) response tokens (up to and including EOS).

    Returns:
      (B, R) rewards, 0 outside the mask.
    """
    last = jnp.maximum(mask.sum(axis=-1) - 1, 0)
    is_last = jnp.arange(mask.shape[1])[None, :] == last[:, None]
    return jnp.where(mask, -kl_coef * kl + jnp.where(is_last, score[:, None], 0.0), 0.0)


def adapted_kl_coef(kl_coef: jax.Array, observed_kl: jax.Array, batch: int, config: LMPPOConfig) -> jax.Array:
    """Ziegler et al.'s proportional controller: β ← β·(1 + clip(KL/target − 1, ±0.2)·B/horizon)."""
    error = jnp.clip(observed_kl / config.kl_target - 1.0, -0.2, 0.2)
    return kl_coef * (1.0 + error * batch / config.kl_horizon)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class LMPPOLearner:
    """PPO with a KL penalty on a LoRA-adapted transformers Flax causal LM.

    A pytree: ``base_params``, ``sample_prompts`` and ``reward_components`` are its children
    (a plain function there is one static leaf; a ``jax.tree_util.Partial`` contributes the
    arrays it holds, e.g. a reward model's params), everything else is static.

    Attributes:
      model: the Flax causal LM (``rs_jax.models.causal_lm``).
      base_params: its frozen params (the reference policy).
      lora_config: which kernels get LoRA.
      sample_prompts: key -> (prompt_ids (B, P), prompt_mask (B, P)), left-padded, jit-able.
      reward_components: (prompt_ids, prompt_mask, response_tokens (B, R), response_mask) -> (B, C).
      config: LMPPOConfig.
      eos_id, pad_id: special tokens of the policy's vocabulary.
    """

    model: Any = dataclasses.field(metadata=STATIC)
    base_params: PyTree
    lora_config: lora.LoraConfig = dataclasses.field(metadata=STATIC)
    sample_prompts: Callable[[jax.Array], tuple[jax.Array, jax.Array]]
    reward_components: Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
    config: LMPPOConfig = dataclasses.field(metadata=STATIC)
    eos_id: int = dataclasses.field(metadata=STATIC)
    pad_id: int = dataclasses.field(default=0, metadata=STATIC)

    def init_params(self, key: jax.Array) -> dict[str, PyTree]:
        """Fresh LoRA factors (B = 0: the policy starts as the reference) and value head."""
        lora_key, value_key = jax.random.split(key)
        hidden = self.model.config.hidden_size
        return {
            "lora": lora.init_lora(self.base_params, self.lora_config, lora_key),
            "value_head": causal_lm.ValueHead().init(value_key, jnp.zeros((1, 1, hidden))),
        }

    def init_carry(self, key: jax.Array) -> dict[str, Any]:
        """The KL coefficient's start and the scores' running statistics (``key`` unused: the
        learners' shared signature)."""
        del key
        return {
            "kl_coef": jnp.asarray(self.config.kl_coef, jnp.float32),
            "score_stats": normalizer.init_stats(1),
        }

    def policy_params(self, params: dict[str, PyTree]) -> PyTree:
        """The merged params of π = base + LoRA."""
        return lora.apply_lora(self.base_params, params["lora"], self.lora_config)

    def generate(self, lora_params: PyTree, prompt_ids, prompt_mask, key, *, greedy: bool = False):
        """Responses of the policy with these LoRA params (``causal_lm.generate``)."""
        merged = lora.apply_lora(self.base_params, lora_params, self.lora_config)
        return causal_lm.generate(
            self.model,
            merged,
            prompt_ids,
            prompt_mask,
            key,
            max_new_tokens=self.config.max_new_tokens,
            eos_id=self.eos_id,
            pad_id=self.pad_id,
            greedy=greedy,
        )

    def generate_mixture(
        self,
        stacked_lora: PyTree,
        weights: jax.Array,
        prompt_ids,
        prompt_mask,
        key,
        *,
        rule: str = "logits",
        greedy: bool = False,
    ):
        """Responses decoded from the mixture of the N policies base + LoRAᵢ at weights (N,)
        (``causal_lm.generate_mixture``: N forward passes per token, the LoRA factors of
        ``stacked_lora`` (leaves (N, ...)) each applied to the frozen base, never averaged)."""
        merged = jax.vmap(
            lambda lora_params: lora.apply_lora(self.base_params, lora_params, self.lora_config)
        )(stacked_lora)
        return causal_lm.generate_mixture(
            self.model,
            merged,
            weights,
            prompt_ids,
            prompt_mask,
            key,
            rule=rule,
            max_new_tokens=self.config.max_new_tokens,
            eos_id=self.eos_id,
            pad_id=self.pad_id,
            greedy=greedy,
        )

    def _outputs(self, params, prompt_ids, prompt_mask, tokens, mask):
        logits, hidden = causal_lm.sequence_outputs(
            self.model, self.policy_params(params), prompt_ids, prompt_mask, tokens, mask
        )
        values = causal_lm.ValueHead().apply(params["value_head"], hidden)
        return causal_lm.response_log_probs(logits, tokens, mask), values

    def collect(self, params, carry, reward_weights, key):
        prompt_key, sample_key = jax.random.split(key)
        prompt_ids, prompt_mask = self.sample_prompts(prompt_key)
        sample = self.generate(params["lora"], prompt_ids, prompt_mask, sample_key)
        tokens, mask = sample.tokens, sample.mask
        log_probs, values = self._outputs(params, prompt_ids, prompt_mask, tokens, mask)
        reference_logits = causal_lm.sequence_outputs(
            self.model, self.base_params, prompt_ids, prompt_mask, tokens, mask
        )[0]
        reference_log_probs = causal_lm.response_log_probs(reference_logits, tokens, mask)
        kl = jnp.where(mask, log_probs - reference_log_probs, 0.0)
        components = self.reward_components(prompt_ids, prompt_mask, tokens, mask)
        score = components @ reward_weights
        score_stats = normalizer.update_stats(carry["score_stats"], score[:, None])
        scaled_score = score / jnp.sqrt(score_stats.var[0] + 1e-8) if self.config.score_scaling else score
        rewards = token_rewards(scaled_score, kl, mask, carry["kl_coef"])
        values = jnp.where(mask, values, 0.0)
        last = jnp.arange(mask.shape[1])[None, :] == jnp.maximum(mask.sum(axis=-1) - 1, 0)[:, None]
        advantages, returns = gae(
            rewards.T,
            values.T,
            jnp.zeros(mask.shape[0]),
            (last & mask).T.astype(jnp.float32),
            (~mask).T.astype(jnp.float32),
            self.config.discount,
            self.config.gae_lambda,
        )
        advantages, returns = advantages.T, returns.T
        if self.config.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        sequence_kl = kl.sum(axis=-1).mean()
        kl_coef = carry["kl_coef"]
        if self.config.adaptive_kl:
            kl_coef = adapted_kl_coef(kl_coef, sequence_kl, mask.shape[0], self.config)
        batch = {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "tokens": tokens,
            "mask": mask,
            "old_log_probs": jax.lax.stop_gradient(log_probs),
            "old_values": jax.lax.stop_gradient(values),
            "advantages": jax.lax.stop_gradient(advantages),
            "returns": jax.lax.stop_gradient(returns),
        }
        metrics = {
            "reward": score.mean(),
            "components": components.mean(axis=0),
            "kl": sequence_kl,
            "kl_coef": carry["kl_coef"],
            "response_length": mask.sum(axis=-1).mean(),
        }
        return batch, {"kl_coef": kl_coef, "score_stats": score_stats}, metrics

    def loss(self, params, minibatch, key):
        del key
        mask = minibatch["mask"]
        log_probs, values = self._outputs(
            params, minibatch["prompt_ids"], minibatch["prompt_mask"], minibatch["tokens"], mask
        )
        ratio = jnp.exp(log_probs - minibatch["old_log_probs"])
        advantages = minibatch["advantages"]
        clipped_ratio = jnp.clip(ratio, 1.0 - self.config.clip_epsilon, 1.0 + self.config.clip_epsilon)
        policy_loss = masked_mean(jnp.maximum(-advantages * ratio, -advantages * clipped_ratio), mask)
        old_values = minibatch["old_values"]
        clipped_values = old_values + jnp.clip(
            values - old_values, -self.config.value_clip, self.config.value_clip
        )
        value_loss = 0.5 * masked_mean(
            jnp.maximum(
                jnp.square(values - minibatch["returns"]), jnp.square(clipped_values - minibatch["returns"])
            ),
            mask,
        )
        clip_fraction = masked_mean(
            (jnp.abs(ratio - 1.0) > self.config.clip_epsilon).astype(jnp.float32), mask
        )
        total = policy_loss + self.config.value_coef * value_loss
        return total, {"policy_loss": policy_loss, "value_loss": value_loss, "clip_fraction": clip_fraction}
