"""Visual grounding: one expert per object size, their soups, MORL (paper Appendix F, Fig. 5c / 14).

    python -m tasks.grounding                                   # preset "cpu" (default)
    python -m tasks.grounding --preset paper --set refs='/data/refcoco+/refs(unc).p' \
        instances=/data/refcoco+/instances.json image_dir=/data/coco/train2014

Presets:
  cpu    the procedural scene world (32×32 images, 1-3 shapes, referring expressions such as
         "the small red circle on the left", boxes on the 1000×1000 grid), a tiny unified
         ViT + GPT-2 (prompt = expression, output = 4 location tokens of 1000 bins) loaded from
         the shipped starting point (the pretrain preset's weights; starting_point= pre-trains in
         the run instead, 3000 updates, by cross-entropy on the true box tokens), then three size
         experts (small < 30 000, medium < 100 000, large grid px²) and MORL at the uniform μ,
         each trained with CE (±1-bin targets) + 5 × self-critical REINFORCE on 1[IoU > 0.5], all
         vmapped as one program; each expert is asked about objects of its own size wherever
         the scene has one (rewarded_share=1; MORL's uniform μ draws them uniformly).
  pretrain  the cpu model pre-trained at length (40 000 updates, cosine step size, ±1 bin): the recipe
         of the shipped starting point, rs_jax/pretrained/grounding.
  paper  RefCOCO+ from local files (paths with --set), 224² images; for a GPU.
  smoke  seconds; for tests.

Expected result (cpu): accuracy (IoU > 0.5) is highest on large objects and lowest on small
ones; each expert is best on its own size bucket (paired differences over 6000 held-out
expressions), the soups move smoothly between them over the simplex (spider.png), and
boxes.png shows the true (green) and predicted (red) boxes.
"""

from __future__ import annotations

import dataclasses

from configs import UnifiedModelConfig, preset_config, pretrain_recipe, unified_preset
from rs_jax.config import BudgetConfig
from rs_jax.starting_points import SHIPPED

BUDGET = BudgetConfig(
    pretrain_updates=3000,
    pretrain_learning_rate=2e-3,
    finetune_updates=500,
    finetune_learning_rate=5e-4,
    checkpoint_every=100,
)


@dataclasses.dataclass(frozen=True)
class GroundingConfig(UnifiedModelConfig):
    refs: str = ""  # refs(unc).p of RefCOCO+/RefCOCO; "" uses the procedural scene world
    instances: str = ""  # the dataset's instances.json (with refs)
    image_dir: str = ""  # folder of the images named by instances.json
    train_split: str = "train"
    eval_split: str = "val"
    max_expressions: int = 0  # real data: load at most this many expressions per split (0: all)
    prompt_length: int = 10  # tokens of a referring expression incl. <eos>
    max_objects: int = 3  # scene world: objects per scene (1..max)
    num_bins: int = 1000
    location_sigma: float = 10.0  # cross-entropy targets spread over ±σ bins (0: the true tokens only)
    budget: BudgetConfig = BUDGET
    pretrain_batch: int = 64
    images_per_update: int = 24
    # Scene world: > 0 draws the referred object of each fine-tuning scene with weight
    # (1 − s) + 3s·w_bucket, w the run's reward weights, so an expert sees more of its own size
    # (s = 1: only its own where the scene has one); 0 draws it uniformly, as in the paper.
    rewarded_share: float = 0.0
    num_samples: int = 4
    supervised_weight: float = 1.0  # CE + policy_weight × REINFORCE (paper: 1 and 5)
    policy_weight: float = 5.0
    iou_threshold: float = 0.5  # the reward is 1[IoU > iou_threshold]
    morl: bool = True  # also train MORL at the uniform weighting μ = (1/3, 1/3, 1/3)
    rs_points: int = 7  # points per edge of the simplex grid: 28 soups for N = 3, the uniform one included
    # Scene world: balanced over the three size buckets. The experts' gains on their own bucket
    # are 0.03-0.10 (benchmarks/grounding_finetune.py); 500 per bucket measures them to a paired
    # standard error near 0.02, 2000 per bucket near 0.01.
    eval_objects: int = 6000
    figure_scenes: int = 6


# Targets spread over ±1 bin: pre-trained at length, the model finds 83-88% of the objects of each
# size bucket at IoU > 0.5 (±10 bins: 98.5-99.95%, leaving the size experts nothing to gain).
SHARP_SIGMA = 1.0

PRESETS: dict[str, GroundingConfig] = {
    "cpu": GroundingConfig(starting_point=SHIPPED, location_sigma=SHARP_SIGMA, rewarded_share=1.0),
    "pretrain": GroundingConfig(budget=pretrain_recipe(BUDGET, 40_000), location_sigma=SHARP_SIGMA),
    "paper": GroundingConfig(
        **unified_preset("paper", BUDGET),
        prompt_length=24,
        location_sigma=0.0,
        rs_points=13,  # multiples of 1/12: the uniform soup included
        eval_objects=0,  # real data: the whole evaluation split
    ),
    "smoke": GroundingConfig(
        **unified_preset("smoke", BUDGET),
        rs_points=4,
        eval_objects=6,
        figure_scenes=2,
    ),
}


def get_config(preset: str = "cpu") -> GroundingConfig:
    """The config of a preset (see the module docstring)."""
    return preset_config(PRESETS, preset)
