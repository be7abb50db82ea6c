"""Merge rules against hand-computed cases, the linear soup they reduce to, and inside one sweep."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs_jax import merge_rules, soup

BASE = {"dense": {"kernel": jnp.zeros((2, 3)), "bias": jnp.ones(3)}, "head": jnp.full((4,), 0.5)}


def disjoint_experts() -> list[dict]:
    """Three experts from BASE, each moving parameters no other expert moves."""
    rng = np.random.default_rng(0)
    masks = [np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3))]
    masks[0][0, :2], masks[1][0, 2], masks[1][1, 0], masks[2][1, 1:] = 1, 1, 1, 1
    experts = []
    for index, mask in enumerate(masks):
        delta = rng.normal(size=(2, 3)) * mask
        expert = jax.tree.map(jnp.array, BASE)
        expert["dense"]["kernel"] = BASE["dense"]["kernel"] + jnp.asarray(delta, jnp.float32)
        expert["head"] = expert["head"].at[index].add(1.5 - index)
        experts.append(expert)
    return experts


def assert_trees_close(got, want, atol=1e-6):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), atol=atol, rtol=0)


@pytest.mark.parametrize(
    "rule",
    [
        lambda e, w: merge_rules.linear(e, w, base=BASE),
        lambda e, w: merge_rules.task_arithmetic(e, w, base=BASE, scale=1.0),
        lambda e, w: merge_rules.ties(e, w, base=BASE, density=1.0),
        lambda e, w: merge_rules.dare(e, w, base=BASE, drop_probability=0.0, key=jax.random.key(0)),
        lambda e, w: merge_rules.fisher(e, w, fishers=[jax.tree.map(jnp.ones_like, BASE)] * 3),
    ],
    ids=["linear", "task_arithmetic", "ties", "dare", "fisher"],
)
def test_on_disjoint_experts_every_rule_is_the_linear_soup(rule):
    experts = disjoint_experts()
    for weights in ([0.2, 0.5, 0.3], [1.0, 0.0, 0.0], [0.0, 0.4, 0.6]):
        assert_trees_close(rule(experts, weights), soup.interpolate(experts, weights))


def test_ties_elects_the_sign_of_the_weighted_sum_by_hand():
    base = jnp.zeros(4)
    experts = [jnp.array([3.0, -1.0, 2.0, 0.0]), jnp.array([-1.0, 4.0, 2.0, -1.0])]
    # λ = (0.25, 0.75): weighted τ = [0.75, -0.25, 0.5, 0] and [-0.75, 3, 1.5, -0.75];
    # sums [0, 2.75, 2, -0.75] elect [+, +, +, -]; agreeing entries kept:
    # entry 0: 0.75 (a tie elects +), entry 1: 3, entry 2: 0.5 + 1.5, entry 3: -0.75.
    merged = merge_rules.ties(experts, [0.25, 0.75], base=base, density=1.0)
    np.testing.assert_allclose(np.asarray(merged), [0.75, 3.0, 2.0, -0.75], rtol=1e-6)
    # density 0.5 keeps the 2 largest magnitudes of each τ: [3, 0, 2, 0] and [0, 4, 2, 0]
    # (expert 0's 2 ties with nothing); scale 2 doubles the merged task vector.
    trimmed = merge_rules.ties(experts, [0.25, 0.75], base=base, density=0.5, scale=2.0)
    np.testing.assert_allclose(np.asarray(trimmed), 2 * np.array([0.75, 3.0, 0.5 + 1.5, 0.0]), rtol=1e-6)


def test_trim_keeps_the_top_magnitudes_of_each_task_vector():
    tau = jnp.array([[1.0, -5.0, 2.0, 0.5, -3.0], [0.125, 0.25, -0.375, 0.5, 0.75]])
    np.testing.assert_array_equal(
        np.asarray(merge_rules.trim(tau, 0.4)), [[0, -5.0, 0, 0, -3.0], [0, 0, 0, 0.5, 0.75]]
    )
    np.testing.assert_array_equal(np.asarray(merge_rules.trim(tau, 0.01))[0], [0, -5.0, 0, 0, 0])  # k >= 1
    rng = np.random.default_rng(0)
    for shape, density in [((3, 40, 7), 0.2), ((2, 1000), 0.05), ((2, 16), 0.5)]:
        values = rng.normal(size=shape).round(1).astype(np.float32)  # repeated magnitudes and zeros
        kept = np.asarray(merge_rules.trim(jnp.asarray(values), density))
        for row, kept_row in zip(values.reshape(shape[0], -1), kept.reshape(shape[0], -1)):
            k = max(1, int(density * row.size))
            kth = np.sort(np.abs(row))[-k]
            np.testing.assert_array_equal(kept_row, np.where(np.abs(row) >= kth, row, 0))


def test_ties_and_dare_vertices_are_the_trimmed_and_dropped_experts():
    experts = disjoint_experts()
    vertex = merge_rules.ties(experts, [0.0, 1.0, 0.0], base=BASE, density=1.0)
    assert_trees_close(vertex, experts[1])


def test_dare_expectation_is_the_linear_soup():
    # Every entry of τ₁ is 1 and of τ₂ is 2, so the mean over 100k entries estimates E[θ] entrywise:
    # E = 0.3 · 1 + 0.7 · 2 = 1.7, per-entry std = sqrt(0.3² · 1 + 0.7² · 4) · sqrt(p/(1-p)) ≈ 1.43.
    size, p = 100_000, 0.5
    base = np.zeros(size, np.float32)
    experts = [np.ones(size, np.float32), np.full(size, 2.0, np.float32)]
    merged = np.asarray(
        merge_rules.dare(experts, [0.3, 0.7], base=base, drop_probability=p, key=jax.random.key(7))
    )
    standard_error = np.sqrt((0.09 + 0.49 * 4) * p / (1 - p) / size)
    assert abs(merged.mean() - 1.7) < 4 * standard_error
    # drop both, keep τ₁ only (0.3 · 2), τ₂ only (0.7 · 4), both:
    np.testing.assert_allclose(np.unique(merged), [0.0, 0.6, 2.8, 3.4], rtol=1e-6)
    assert merged.dtype == np.float32


def test_dare_masks_follow_the_key_not_lambda():
    experts = [np.ones(64, np.float32), np.full(64, 3.0, np.float32)]
    base = np.zeros(64, np.float32)

    def run(weights, seed):
        return np.asarray(
            merge_rules.dare(experts, weights, base=base, drop_probability=0.5, key=jax.random.key(seed))
        )

    np.testing.assert_array_equal(run([1.0, 0.0], 0), run([1.0, 0.0], 0))
    assert not np.array_equal(run([1.0, 0.0], 0), run([1.0, 0.0], 1))
    np.testing.assert_array_equal(
        run([0.5, 0.5], 0) == 0, (run([1.0, 0.0], 0) == 0) & (run([0.0, 1.0], 0) == 0)
    )


def test_slerp_is_the_closed_form():
    first, second = jnp.array([1.0, 0.0]), jnp.array([0.0, 2.0])  # Ω = π/2
    for t in (0.0, 0.3, 1.0):
        merged = merge_rules.slerp([first, second], [1 - t, t])
        want = np.cos(t * np.pi / 2) * np.array([1.0, 0.0]) + np.sin(t * np.pi / 2) * np.array([0.0, 2.0])
        np.testing.assert_allclose(np.asarray(merged), want, atol=1e-6)
    colinear = merge_rules.slerp([first, 3 * first], [0.5, 0.5])
    np.testing.assert_allclose(np.asarray(colinear), [2.0, 0.0], rtol=1e-6)
    zero = merge_rules.slerp([jnp.zeros(2), second], [0.25, 0.75])
    np.testing.assert_allclose(np.asarray(zero), [0.0, 1.5], rtol=1e-6)
    with pytest.raises(ValueError, match="exactly 2"):
        merge_rules.slerp([first, second, first], [0.2, 0.3, 0.5])


def test_rules_keep_the_dtype_and_take_numpy_tensors():
    base = np.zeros((3, 2), np.float32)
    experts = [np.ones((3, 2), np.float32), -np.ones((3, 2), np.float32)]
    bf16 = [jnp.asarray(e, jnp.bfloat16) for e in experts]
    key = jax.random.key(0)
    for name, kwargs in [
        ("linear", {}),
        ("task_arithmetic", {"base": base}),
        ("ties", {"base": base, "density": 0.5}),
        ("dare", {"base": base, "drop_probability": 0.3, "key": key}),
        ("slerp", {}),
    ]:
        rule = merge_rules.RULES[name]
        assert rule(experts, [0.4, 0.6], **kwargs).dtype == jnp.float32, name
        assert rule(bf16, [0.4, 0.6], **kwargs).dtype == jnp.bfloat16, name


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda e: merge_rules.ties(e, [0.5, 0.5], base=BASE, density=0.0), r"density must lie in \(0, 1\]"),
        (lambda e: merge_rules.ties(e, [0.5, 0.5], base=BASE, density=float("nan")), "density"),
        (lambda e: merge_rules.task_arithmetic(e, [0.5, 0.6], base=BASE), "sum to 1"),
        (lambda e: merge_rules.task_arithmetic(e, [[0.5, 0.5]], base=BASE), "one λ of shape"),
        (lambda e: merge_rules.task_arithmetic(e, [0.5, 0.5], base=BASE["dense"]), "structure of one expert"),
        (
            lambda e: merge_rules.dare(e, [0.5, 0.5], base=BASE, drop_probability=1.0, key=jax.random.key(0)),
            r"drop_probability must lie in \[0, 1\)",
        ),
        (lambda e: merge_rules.task_arithmetic(e, [0.5, 0.5], base=BASE, scale=float("inf")), "scale"),
    ],
)
def test_bad_parameters_raise_in_words(call, message):
    with pytest.raises(ValueError, match=message):
        call(disjoint_experts()[:2])


def eval_rewards(params):
    """(2,) rewards of the BASE-shaped network on fixed inputs."""
    hidden = jnp.tanh(jnp.array([[0.5, -1.0]]) @ params["dense"]["kernel"] + params["dense"]["bias"][None, :])
    return jnp.stack([hidden.sum(), params["head"].sum()])


def test_a_rule_in_a_sweep_is_one_program_with_base_as_an_operand():
    experts = disjoint_experts()[:2]
    experts[1]["dense"]["kernel"] = experts[1]["dense"]["kernel"] - 0.3  # signs now conflict
    grid = soup.simplex_grid(2, 4)
    traces = []

    def counted(params):
        traces.append(1)
        return eval_rewards(params)

    stacked = soup.stack_experts(experts)
    want = jax.jit(jax.vmap(lambda w: eval_rewards(merge_rules.ties(stacked, w, base=BASE, density=0.5))))(
        jnp.asarray(grid, jnp.float32)
    )
    for strategy in ("map", "vmap"):
        rule = jax.tree_util.Partial(merge_rules.ties, base=BASE, density=0.5)
        got = soup.sweep(counted, experts, grid, merge=rule, strategy=strategy)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, err_msg=strategy)
    shifted_base = jax.tree.map(lambda leaf: leaf + 0.1, BASE)
    rule = jax.tree_util.Partial(merge_rules.ties, base=shifted_base, density=0.5)
    soup.sweep(counted, experts, grid, merge=rule, strategy="map")
    assert len(traces) == 2  # one per strategy; a new θ₀ of the same shapes reuses the program


def _pipeline_outputs(rules, mesh=None):
    """pipeline.evaluate on two experts and a MORL run of a linear 'model' (rewards = params)."""
    from rs_jax import pipeline

    init = {"w": jnp.array([0.0, 0.0, 1.0])}
    runs = [
        {"w": jnp.array([1.0, -0.5, 1.0])},
        {"w": jnp.array([0.5, 0.0, 1.0])},
        {"w": jnp.array([-0.2, 1.0, 1.0])},
    ]
    trained = pipeline.TrainedRuns(runs, np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]), [0, 2], init)
    phase = pipeline.FineTuning(
        learner=None, start=None, evaluate=jax.tree_util.Partial(lambda params, key: params["w"][None, :2])
    )
    return pipeline.evaluate(trained, phase, 5, jax.random.PRNGKey(0), n_rewards=2, rules=rules, mesh=mesh)


def test_pipeline_evaluates_each_distinct_point_once():
    rs, runs, init, _, costs = _pipeline_outputs(None)
    # 5 RS points + 3 runs + the init, less RS's two endpoints, which are the expert runs.
    assert costs["rs"]["sweep_points"] == 7
    np.testing.assert_allclose(runs.means, [[1.0, -0.5], [0.5, 0.0], [-0.2, 1.0]])
    np.testing.assert_allclose(init.means, [[0.0, 0.0]])
    for lam, means in zip(rs.weights, rs.means):
        np.testing.assert_allclose(
            means, lam[0] * np.array([1.0, -0.5]) + lam[1] * np.array([-0.2, 1.0]), atol=1e-6
        )


def test_pipeline_evaluation_split_over_the_devices_equals_one_device():
    from rs_jax import distributed
    from rs_jax.config import MergeRulesConfig

    rules = MergeRulesConfig(rules=("ties", "dare"))
    one = _pipeline_outputs(rules)
    split = _pipeline_outputs(rules, mesh=distributed.make_mesh())  # conftest.py's 4 CPU devices
    for want, got in zip([*one[:3], *one[3].values()], [*split[:3], *split[3].values()]):
        np.testing.assert_array_equal(got.means, want.means)
        np.testing.assert_array_equal(got.weights, want.weights)


def test_distinct_rows_keep_the_first_appearance_order_and_map_every_row_back():
    from rs_jax import pipeline

    weights = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    distinct, copy_of = pipeline.distinct_rows(weights)
    np.testing.assert_array_equal(distinct, [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_array_equal(distinct[copy_of], weights)


def test_pipeline_evaluates_each_merge_rule_at_the_rs_grid_with_its_parameters():
    from rs_jax.config import MergeRulesConfig

    rs, _, _, extras, _ = _pipeline_outputs(MergeRulesConfig(rules=("ties", "dare")))
    assert sorted(extras) == ["DARE (p 0.5)", "TIES (density 0.2)"]
    ties_front = extras["TIES (density 0.2)"]
    np.testing.assert_allclose(ties_front.weights, rs.weights)
    experts = soup.stack_experts([{"w": jnp.array([1.0, -0.5, 1.0])}, {"w": jnp.array([-0.2, 1.0, 1.0])}])
    for lam, means in zip(ties_front.weights, ties_front.means):
        merged = merge_rules.ties(
            experts, jnp.asarray(lam), base={"w": jnp.array([0.0, 0.0, 1.0])}, density=0.2
        )
        np.testing.assert_allclose(means, np.asarray(merged["w"][:2]), atol=1e-6)


def test_neutral_dare_and_task_arithmetic_give_the_linear_soup_front():
    from rs_jax.config import MergeRulesConfig

    neutral = MergeRulesConfig(rules=("dare", "task_arithmetic"), dare_drop_probability=0.0)
    rs, _, _, extras, _ = _pipeline_outputs(neutral)
    assert sorted(extras) == ["DARE (p 0)", "task arithmetic (scale 1)"]
    for evaluation in extras.values():
        np.testing.assert_allclose(evaluation.means, rs.means, atol=1e-6)


def test_the_config_group_binds_each_rule_to_its_field_and_labels_its_front():
    from rs_jax import config as config_lib
    from rs_jax import pipeline

    rules = config_lib.MergeRulesConfig(
        rules=tuple(config_lib.MERGE_RULES),
        ties_density=0.4,
        dare_drop_probability=0.25,
        task_arithmetic_scale=0.5,
    )
    grid = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    key = jax.random.key(3)
    families = pipeline.merge_rule_families(rules, grid, grid, base=BASE, key=key)
    experts, weights = disjoint_experts(), [0.2, 0.3, 0.5]
    want = {
        "TIES (density 0.4)": merge_rules.ties(experts, weights, base=BASE, density=0.4),
        "DARE (p 0.25)": merge_rules.dare(experts, weights, base=BASE, drop_probability=0.25, key=key),
        "task arithmetic (scale 0.5)": merge_rules.task_arithmetic(experts, weights, base=BASE, scale=0.5),
    }
    assert list(families) == list(want)
    for label, family in families.items():
        np.testing.assert_array_equal(family.labels, grid)
        assert_trees_close(family.merge(experts, weights), want[label])
