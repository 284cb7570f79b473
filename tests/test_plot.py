"""npgpt.training.plot: the axes cover the data (issue 10, item 4), in the tick helper and in the drawn SVG."""

import math
import re
import sys

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from npgpt.training.plot import nice_ticks, plot_losses

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def test_the_reported_case():
    """nice_ticks(1.6, 4.19) used to stop at 4, below the first losses (4.19)."""
    t = nice_ticks(1.6, 4.19)
    assert t[0] <= 1.6 and t[-1] >= 4.19


@given(lo=finite, width=st.floats(0.0, 1e6, allow_nan=False))
def test_ticks_cover_the_range_evenly(lo, width):
    hi = lo + width
    t = nice_ticks(lo, hi)
    assert t[0] <= lo + 1e-9 * max(1.0, abs(lo)) and t[-1] >= hi - 1e-9 * max(1.0, abs(hi))
    steps = np.diff(t)
    assert len(t) >= 2 and np.all(steps > 0) and np.allclose(steps, steps[0], rtol=1e-6)
    mant = steps[0] / 10.0 ** math.floor(math.log10(steps[0]))
    assert any(abs(mant - m) < 1e-6 for m in (1, 2, 5, 10))  # round steps
    assert len(t) <= 12


def _points(svg):
    """Every (x, y) of every polyline and circle in the SVG."""
    pts = []
    for m in re.finditer(r'points="([^"]*)"', svg):
        pts += [tuple(map(float, p.split(","))) for p in m.group(1).split()]
    pts += [(float(a), float(b)) for a, b in re.findall(r'<circle cx="([-\d.]+)" cy="([-\d.]+)"', svg)]
    return pts


def test_svg_draws_every_point_inside_the_plot_area(tmp_path, monkeypatch):
    """The first losses (4.19, above the old top tick) and the last iteration (1999, past the old last x tick)
    are inside the plot rectangle."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rng = np.random.default_rng(0)
    steps = list(np.linspace(4.19, 1.6, 1999) + 0.01 * rng.standard_normal(1999))
    evals = [(0, 4.19, 4.19), (1000, 2.0, 2.1), (1999, 1.6, 1.7)]
    path = plot_losses(tmp_path / "loss", steps, evals)
    svg = path.read_text()
    x, y, w, h = map(float, re.search(r'<rect x="(\d+)" y="(\d+)" width="(\d+)" height="(\d+)" fill="none"',
                                      svg).groups())
    pts = _points(svg)
    assert len(pts) > 1999
    for px, py in pts:
        assert x - 0.05 <= px <= x + w + 0.05 and y - 0.05 <= py <= y + h + 0.05, (px, py)
