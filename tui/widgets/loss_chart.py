"""The training screen's chart: train loss (raw and smoothed) and validation loss against
tokens seen, with axes, as people read training runs (textual-plotext)."""

from __future__ import annotations

from textual.reactive import reactive
from textual_plotext import PlotextPlot


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def thin(points: list[tuple[int, float]], most: int = 400) -> list[tuple[int, float]]:
    """At most ``most`` points, evenly spread (the last one kept): a long run stays cheap to draw."""
    if len(points) <= most:
        return points
    stride = len(points) / most
    picked = [points[int(i * stride)] for i in range(most)]
    return picked[:-1] + [points[-1]]


class LossChart(PlotextPlot):
    """Loss against tokens seen; ``log_scale`` puts the loss axis on a log scale."""

    log_scale: reactive[bool] = reactive(False)
    smoothing: float = 0.9

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.train: list[tuple[int, float]] = []  # (tokens seen, loss) per step
        self.val: list[tuple[int, float]] = []  # (tokens seen, validation loss) per evaluation

    def set_data(self, train: list[tuple[int, float]], val: list[tuple[int, float]]) -> None:
        self.train, self.val = train, val
        self.replot()

    def watch_log_scale(self, _value: bool) -> None:
        self.replot()

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        scale = "log" if self.log_scale else "linear"
        plt.yscale(scale)
        plt.xlabel("tokens seen")
        plt.title(f"loss ({scale}; smoothed EMA {self.smoothing:g})")
        if self.train:
            xs, ys = zip(*thin(self.train))
            plt.plot(list(xs), list(ys), color="gray", marker="dot", label="train")
            plt.plot(list(xs), smooth(list(ys), self.smoothing), color="cyan", marker="braille", label="train (smoothed)")
        if self.val:
            xs, ys = zip(*self.val)
            plt.plot(list(xs), list(ys), color="orange", marker="hd", label="validation")
        self.refresh()
