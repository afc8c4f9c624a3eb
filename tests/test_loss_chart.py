"""The loss chart's smoothing and thinning (plain functions)."""

from tui.widgets.loss_chart import smooth, thin


def test_smooth_is_a_bias_corrected_ema():
    assert smooth([4.0]) == [4.0]  # bias-corrected: the first value is itself
    out = smooth([4.0, 2.0], weight=0.5)
    assert out[1] == (0.5 * (0.5 * 4.0) + 0.5 * 2.0) / (1 - 0.25)
    assert abs(smooth([3.0] * 50, 0.9)[-1] - 3.0) < 1e-12  # a constant stays constant


def test_thin_keeps_the_ends_and_at_most_n():
    points = [(i, float(i)) for i in range(1000)]
    out = thin(points, 100)
    assert len(out) == 100 and out[0] == (0, 0.0) and out[-1] == (999, 999.0)
    assert thin(points[:50], 100) == points[:50]
