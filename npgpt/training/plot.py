"""The loss-curve picture of a training run: PNG through matplotlib when it is installed, else an SVG written
with the standard library alone.  Both draw the same chart: axes with ticks and labels, the per-step training
loss as a faint line, and the train and val losses of each evaluation as lines with markers, with a legend.

    path = plot_losses("out/loss", step_losses, evals)   # -> out/loss.png or out/loss.svg

The file is written atomically (npgpt/io/atomic.py): a failed write leaves the previous picture as it was.
A mixture of experts' run also gets plot_expert_load: each expert's share of the routed tokens over training,
an SVG beside the loss curve (written atomically: a reader never sees half of it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from ..io.atomic import atomic_write

TRAIN_COLOR, VAL_COLOR, STEP_COLOR = "#1f77b4", "#d62728", "#9ecae1"


def plot_losses(path: str | os.PathLike[str], step_losses: Sequence[float],
                evals: Sequence[Sequence[float]], title: str = "npgpt training loss", fmt: str = "auto") -> Path:
    """Draw the loss curves and return the written file's path.

    path: the file name; its suffix is replaced by .png or .svg.  step_losses[i] is the training loss of
    optimizer step i + 1.  evals: (iteration, train loss, val loss) rows.  fmt: "png" (needs matplotlib),
    "svg", or "auto" (png when matplotlib imports, else svg).
    """
    if fmt not in ("auto", "png", "svg"):
        raise ValueError(f"fmt: expected 'auto', 'png' or 'svg', got {fmt!r}")
    steps: list[tuple[float, float]] = [(i + 1, float(v)) for i, v in enumerate(step_losses)]
    ev = [(float(r[0]), float(r[1]), float(r[2])) for r in evals]
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("auto", "png"):
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            if fmt == "png":
                raise ValueError("fmt: 'png' needs matplotlib, which is not installed") from None
        else:
            out = base.with_suffix(".png")
            fig = Figure(figsize=(8, 4.8), dpi=100)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            if steps:
                ax.plot(*zip(*steps), color=STEP_COLOR, linewidth=0.8, label="train (per step)")
            if ev:
                ax.plot([r[0] for r in ev], [r[1] for r in ev], "o-", color=TRAIN_COLOR, label="train (eval)")
                ax.plot([r[0] for r in ev], [r[2] for r in ev], "s-", color=VAL_COLOR, label="val (eval)")
            ax.set_xlabel("iteration")
            ax.set_ylabel("loss (cross-entropy, nats per token)")
            ax.set_title(title)
            ax.grid(True, alpha=0.3)
            if steps or ev:
                ax.legend()
            fig.tight_layout()
            atomic_write(out, lambda f: fig.savefig(f, format="png"))
            return out
    out = base.with_suffix(".svg")
    svg = _svg(steps, ev, title).encode("utf-8")
    atomic_write(out, lambda f: f.write(svg))  # a failed write (disk full) keeps the old picture whole
    return out


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart), about `target` of them, the first at or below
    lo and the last at or above hi, so an axis from the first to the last tick shows every value."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi - lo <= 1e-9 * max(1.0, abs(lo), abs(hi)):  # one value (or nearly): a unit-wide axis around it
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / max(1, target - 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step  # at or below lo
    n = max(1, math.ceil((hi - first) / step - 1e-9))  # steps until a tick at or above hi
    return [float(f"{first + i * step:.12g}") for i in range(n + 1)]  # 0.30000000000000004 -> 0.3


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e5 else f"{v:.3g}"


def _svg(steps: list[tuple[float, float]], ev: list[tuple[float, float, float]], title: str) -> str:
    W, H = 800, 480
    left, right, top, bottom = 70, 20, 40, 55  # margins: room for tick labels, axis labels and the title
    pw, ph = W - left - right, H - top - bottom
    xs = [s[0] for s in steps] + [r[0] for r in ev]
    ys = [v for v in [s[1] for s in steps] + [r[1] for r in ev] + [r[2] for r in ev] if math.isfinite(v)]
    xt = nice_ticks(0.0, max(xs) if xs else 1.0)
    yt = nice_ticks(min(ys) if ys else 0.0, max(ys) if ys else 1.0)
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (1.0 - (y - y0) / (y1 - y0)) * ph

    def polyline(points: list[tuple[float, float]], color: str, width: float) -> str:
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points if math.isfinite(y))
        return f'<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{pts}"/>'

    e = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         f'font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>']
    for t in xt:  # vertical grid lines, ticks and labels
        x = px(t)
        e.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#e5e5e5"/>')
        e.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 5}" stroke="black"/>')
        e.append(f'<text x="{x:.1f}" y="{top + ph + 19}" text-anchor="middle">{_fmt(t)}</text>')
    for t in yt:
        y = py(t)
        e.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        e.append(f'<line x1="{left - 5}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="black"/>')
        e.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    e.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')
    e.append(f'<text x="{left + pw / 2}" y="{H - 12}" text-anchor="middle">iteration</text>')
    e.append(f'<text transform="translate(18 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
             f'loss (cross-entropy, nats per token)</text>')
    legend = []
    if steps:
        e.append(polyline(steps, STEP_COLOR, 1))
        legend.append(("train (per step)", STEP_COLOR))
    for col, color, name in ((1, TRAIN_COLOR, "train (eval)"), (2, VAL_COLOR, "val (eval)")):
        if not ev:
            break
        pts = [(r[0], r[col]) for r in ev]
        e.append(polyline(pts, color, 2))
        e.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{color}"/>'
                 for x, y in pts if math.isfinite(y))
        legend.append((name, color))
    lx, ly = left + pw - 150, top + 10  # legend box, top right inside the plot
    if legend:
        e.append(f'<rect x="{lx}" y="{ly}" width="140" height="{12 + 18 * len(legend)}" fill="white" '
                 f'stroke="#999"/>')
    for i, (name, color) in enumerate(legend):
        y = ly + 16 + 18 * i
        e.append(f'<line x1="{lx + 8}" y1="{y - 4}" x2="{lx + 30}" y2="{y - 4}" stroke="{color}" stroke-width="3"/>')
        e.append(f'<text x="{lx + 36}" y="{y}">{escape(name)}</text>')
    e.append("</svg>")
    return "\n".join(e) + "\n"


EXPERT_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf")


def plot_expert_load(path: str | os.PathLike[str], load: Sequence[Sequence[float]],
                     title: str = "npgpt expert load") -> Path:
    """Each expert's share of the routed tokens (load[i][e]: step i + 1, expert e; rows sum to 1) as one line
    per expert, smoothed by a running mean over 1% of the steps, with 1/E (perfect balance) dashed.  SVG,
    standard library only, written atomically; returns the path."""
    rows = [[float(v) for v in r] for r in load]
    out = Path(path).with_suffix(".svg")
    out.parent.mkdir(parents=True, exist_ok=True)
    E = len(rows[0]) if rows else 0
    w = max(1, len(rows) // 100)  # running-mean window
    series = []
    for e in range(E):
        vals = [r[e] for r in rows]
        series.append([(i + 1.0, sum(vals[max(0, i - w + 1):i + 1]) / (i + 1 - max(0, i - w + 1)))
                       for i in range(len(vals))])
    W, H = 800, 480
    left, right, top, bottom = 70, 110, 40, 55
    pw, ph = W - left - right, H - top - bottom
    xt = nice_ticks(0.0, float(len(rows)) or 1.0)
    hi = max([v for s_ in series for _, v in s_] + [1.0 / E if E else 1.0])
    yt = nice_ticks(0.0, hi)
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (1.0 - (y - y0) / (y1 - y0)) * ph

    e_ = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
          f'font-family="sans-serif" font-size="12">', f'<rect width="{W}" height="{H}" fill="white"/>',
          f'<text x="{(left + W - right) / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>']
    for t in xt:
        e_.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + ph}" stroke="#e5e5e5"/>')
        e_.append(f'<text x="{px(t):.1f}" y="{top + ph + 19}" text-anchor="middle">{_fmt(t)}</text>')
    for t in yt:
        e_.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + pw}" y2="{py(t):.1f}" stroke="#e5e5e5"/>')
        e_.append(f'<text x="{left - 8}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    e_.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')
    e_.append(f'<text x="{left + pw / 2}" y="{H - 12}" text-anchor="middle">iteration</text>')
    e_.append(f'<text transform="translate(18 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
              f'share of routed tokens</text>')
    if E:
        e_.append(f'<line x1="{left}" y1="{py(1.0 / E):.1f}" x2="{left + pw}" y2="{py(1.0 / E):.1f}" '
                  f'stroke="black" stroke-dasharray="6 4"/>')
    for e, pts in enumerate(series):
        color = EXPERT_COLORS[e % len(EXPERT_COLORS)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        e_.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>')
        y = top + 16 + 18 * e
        e_.append(f'<line x1="{left + pw + 10}" y1="{y - 4}" x2="{left + pw + 32}" y2="{y - 4}" stroke="{color}" '
                  f'stroke-width="3"/><text x="{left + pw + 38}" y="{y}">expert {e}</text>')
    e_.append("</svg>")
    data = ("\n".join(e_) + "\n").encode("utf-8")
    atomic_write(out, lambda f: f.write(data))
    return out
