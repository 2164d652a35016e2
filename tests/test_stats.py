import numpy as np
import pytest
from scipy import stats

from fersynth.compare.stats import crossed_difference, holm, minimum_detectable_effect, verdict


def _trained_model(difficulty, quality_sd, rng, shift=0.0):
    """0/1 correctness of one trained model: a per-seed quality offset plus per-image idiosyncrasy."""
    logits = difficulty + shift + rng.normal(0, quality_sd) + rng.normal(0, 1.0, size=difficulty.shape)
    return (rng.random(difficulty.shape) < 1 / (1 + np.exp(-logits))).astype(float)


def test_variance_of_the_mean_is_the_crossed_anova_formula_on_a_hand_case():
    d = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, -1.0], [1.0, 1.0, 1.0, 0.0]])
    s, n = d.shape
    grand, rows, cols = d.mean(), d.mean(1), d.mean(0)
    ms_seed = n * ((rows - grand) ** 2).sum() / (s - 1)
    ms_image = s * ((cols - grand) ** 2).sum() / (n - 1)
    ms_res = ((d - rows[:, None] - cols[None] + grand) ** 2).sum() / ((s - 1) * (n - 1))
    assert ms_seed > ms_res and ms_image > ms_res  # no component truncated in this case
    result = crossed_difference(d)
    assert result.difference == pytest.approx(grand)
    assert result.se**2 == pytest.approx((ms_seed + ms_image - ms_res) / (s * n))
    # Satterthwaite's degrees of freedom for MS_seed + MS_image - MS_residual (not S - 1: see the module docstring)
    combination = ms_seed + ms_image - ms_res
    expected_df = combination**2 / (ms_seed**2 / (s - 1) + ms_image**2 / (n - 1) + ms_res**2 / ((s - 1) * (n - 1)))
    assert result.df == pytest.approx(expected_df)
    assert result.high - grand == pytest.approx(stats.t.ppf(0.975, expected_df) * result.se)
    assert result.low < grand < result.high


def test_without_seed_variance_the_degrees_of_freedom_are_satterthwaites():
    from fersynth.compare.stats import satterthwaite_df

    rng = np.random.default_rng(0)
    image_effect = rng.normal(0, 1, 50)
    d = image_effect[None, :] + rng.normal(0, 0.1, (4, 50))  # every seed pair alike; images differ
    result = crossed_difference(d)
    assert result.seed_share == 0.0
    s, n = d.shape
    grand, cols = d.mean(), d.mean(0)
    ms_image = s * ((cols - grand) ** 2).sum() / (n - 1)
    assert result.se**2 == pytest.approx(ms_image / (s * n))  # seed and residual terms cancel
    assert result.df == pytest.approx(satterthwaite_df(0, ms_image, 0, 0, 1, 0, s, n)) and result.df == n - 1


def test_seed_variance_widens_the_interval_that_image_resampling_alone_would_give():
    """The first release's failure: every seed pair differs by a lot, in both directions; images alone
    call that significant, the crossed design does not."""
    rng = np.random.default_rng(3)
    n = 800
    seed_effects = np.array([0.12, -0.08, 0.10, -0.06, 0.09])
    d = np.stack(
        [(rng.random(n) < 0.25 + max(e, 0)).astype(float) - (rng.random(n) < 0.25 - min(e, 0)) for e in seed_effects]
    )
    result = crossed_difference(d)
    image_only_se = d.mean(0).std(ddof=1) / np.sqrt(n)
    assert result.se > 2 * image_only_se
    assert result.seed_share > 0.5
    assert result.low < 0 < result.high


def test_a_real_gain_is_found_and_a_null_is_not():
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0, 1.5, 400)
    gain = np.stack(
        [_trained_model(difficulty, 0.1, rng, shift=1.0) - _trained_model(difficulty, 0.1, rng) for _ in range(5)]
    )
    found = crossed_difference(gain)
    assert found.p_value < 1e-4 and found.low > 0
    same = np.zeros((5, 400))
    assert crossed_difference(same).p_value == 1.0 and crossed_difference(same).se == 0.0


def test_a_a_comparisons_reject_at_about_the_nominal_rate():
    """Same training distribution on both sides (seeds vary, the test set is redrawn): "significant" at
    most ~5% of the time. Wide tolerance: 400 replicates."""
    rng = np.random.default_rng(1)
    rejected = 0
    for _ in range(400):
        difficulty = rng.normal(-0.3, 1.5, 80)
        d = np.stack([_trained_model(difficulty, 0.4, rng) - _trained_model(difficulty, 0.4, rng) for _ in range(5)])
        rejected += crossed_difference(d).p_value < 0.05
    assert rejected / 400 <= 0.085


def test_needs_two_seeds_and_two_images():
    with pytest.raises(ValueError, match="2 seeds"):
        crossed_difference(np.ones((1, 10)))
    with pytest.raises(ValueError, match="seeds x images"):
        crossed_difference(np.ones(10))


def test_holm_matches_the_step_down_by_hand():
    # sorted 0.01, 0.02, 0.03, 0.04 -> 4*0.01, max(., 3*0.02), max(., 2*0.03), max(., 0.04)
    assert holm([0.04, 0.01, 0.03, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_minimum_detectable_effect_has_the_stated_power():
    """Checked by simulating the t statistic: at 4 degrees of freedom and a strict level the normal
    shortcut (t quantile + t power quantile) promises 80% but delivers ~72%."""
    rng = np.random.default_rng(0)
    critical = stats.t.ppf(1 - 0.004 / 2, 4)
    shift = minimum_detectable_effect(1.0, 4, alpha=0.004)
    t = rng.normal(shift, 1, 200_000) / np.sqrt(rng.chisquare(4, 200_000) / 4)
    assert np.mean(np.abs(t) > critical) == pytest.approx(0.8, abs=0.005)
    assert shift > stats.t.ppf(1 - 0.002, 4) + stats.t.ppf(0.8, 4)


def test_minimum_detectable_effect_grows_with_the_standard_error_and_strictness():
    base = minimum_detectable_effect(0.02, 30)
    assert base == pytest.approx((2.0423 + 0.8538) * 0.02, rel=2e-3)
    assert minimum_detectable_effect(0.04, 30) == pytest.approx(2 * base)
    assert minimum_detectable_effect(0.02, 30, alpha=0.005) > base


def test_verdict_follows_the_adjusted_p_value():
    assert verdict(0.05, 0.01, 0.03) == "helps"
    assert verdict(-0.05, 0.01, 0.03) == "hurts"
    assert verdict(0.05, 0.2, 0.123) == "inconclusive (detects +-12.3 pts)"


def test_a_a_with_image_effects_counts_test_image_sampling():
    """Per-image effects with zero mean (some images favour one side, some the other) and stable seeds:
    a test that looks only at the 5 per-seed means calls this "significant" too often; this one does not."""
    rng = np.random.default_rng(7)
    ours = seed_only = 0
    replicates = 300
    for _ in range(replicates):
        difficulty = rng.normal(-0.3, 1.5, 840)
        u = rng.normal(0, 1.5, 840)  # a fresh test set each time: its image effects average zero
        d = np.stack(
            [
                _trained_model(difficulty + u / 2, 0.05, rng) - _trained_model(difficulty - u / 2, 0.05, rng)
                for _ in range(5)
            ]
        )
        ours += crossed_difference(d).p_value < 0.05
        seed_only += stats.ttest_1samp(d.mean(1), 0).pvalue < 0.05
    assert ours / replicates <= 0.065
    assert seed_only / replicates > ours / replicates  # the case the seed-only view gets wrong


def _crossed(rng, seeds, images, seed_sd, image_sd, residual_sd, shift=0.0):
    return (
        shift
        + rng.normal(0, seed_sd, (seeds, 1))
        + rng.normal(0, image_sd, (1, images))
        + rng.normal(0, residual_sd, (seeds, images))
    )


def test_the_plan_at_the_observed_seed_count_is_the_observed_standard_error():
    from fersynth.compare.stats import planned_se_df

    rng = np.random.default_rng(11)
    for seed_sd in (0.0, 0.05, 0.2):
        result = crossed_difference(_crossed(rng, 5, 80, seed_sd, 0.3, 0.5))
        se, df = planned_se_df(result, 5)
        assert se == pytest.approx(result.se) and df == pytest.approx(result.df)
        assert planned_se_df(result, 20)[0] < se  # more seeds, a smaller standard error


def test_seeds_needed_reach_the_stated_power_and_one_seed_fewer_does_not():
    """Plan from one pilot, then simulate designs with the planned seed count from the same components."""
    from fersynth.compare.stats import seeds_needed

    rng = np.random.default_rng(12)
    seed_sd, image_sd, residual_sd, images = 0.04, 0.15, 0.4, 150
    pilot = crossed_difference(_crossed(rng, 40, images, seed_sd, image_sd, residual_sd))  # good estimates
    effect = 0.06
    planned = seeds_needed(pilot, effect)
    assert planned is not None and 2 < planned < 40

    def power(seeds):
        hits = sum(
            crossed_difference(_crossed(rng, seeds, images, seed_sd, image_sd, residual_sd, effect)).p_value < 0.05
            for _ in range(600)
        )
        return hits / 600

    assert 0.74 <= power(planned) <= 0.9  # 0.8 planned (600 draws: sd 0.016)
    assert power(max(planned // 3, 2)) < 0.7


def test_a_test_set_too_small_for_the_effect_needs_no_finite_number_of_seeds():
    from fersynth.compare.stats import seeds_needed

    rng = np.random.default_rng(13)
    result = crossed_difference(_crossed(rng, 5, 25, 0.02, 0.5, 0.5))  # 25 very different images
    assert seeds_needed(result, 0.02) is None  # image variance alone: se >= 0.5 / 5 = 0.1
    assert seeds_needed(result, 0.9) == 2
