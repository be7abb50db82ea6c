"""The checks every token-generating task's smoke test makes on its decoding-time mixing front."""


def check_decoding_mixing(results, summary_md, n_experts=2):
    """MOD's front at the RS grid and its cost beside RS's (forward passes per token, wall seconds)."""
    mod = results["extra_soups"]["MOD (decoding-time mixing)"]
    assert [point["lambda"] for point in mod] == [point["lambda"] for point in results["rs"]]
    assert all(set(point["rewards"][results["reward_names"][0]]) == {"mean", "stderr"} for point in mod)
    summary = results["summary"]
    assert {"MOD (decoding-time mixing)_expected_utility", "MOD (decoding-time mixing)_hypervolume"} <= set(
        summary
    )
    cost = results["evaluation_cost"]
    assert cost["rs"]["forward_passes_per_token"] == 1 and cost["rs"]["wall_seconds"] > 0
    assert cost["MOD (decoding-time mixing)"]["forward_passes_per_token"] == n_experts
    assert cost["MOD (decoding-time mixing)"]["wall_seconds"] > 0
    assert "| MOD (decoding-time mixing) |" in summary_md and "forward passes per token" in summary_md
