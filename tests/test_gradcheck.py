"""npgpt.gradcheck itself: it must pass correct layers, catch and locate wrong ones, and leave inputs alone."""

import numpy as np
import pytest
from helpers import rand, seeds
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npgpt.gradcheck import GradcheckError, GradcheckResult, check_layer, numerical_gradient, relative_error


def _forward(x, y, k=2):
    """out = sin(x) * y + x**k  (elementwise), with an integer exponent k as a non-differentiable input."""
    return np.sin(x) * y + x ** k, (x, y, k)


def _backward(dout, cache):
    x, y, k = cache
    return dout * (np.cos(x) * y + k * x ** (k - 1)), dout * np.sin(x)


def _nudged_backward(which, index, factor=1.001):
    """_backward with one element of one gradient multiplied by factor."""
    def backward(dout, cache):
        grads = [g.copy() for g in _backward(dout, cache)]
        grads[which][index] *= factor
        return tuple(grads)
    return backward


def _xy(seed=0, shape=(3, 4)):
    rng = np.random.default_rng(seed)
    return rand(rng, *shape), rand(rng, *shape)


def test_correct_layer_passes_with_tiny_errors():
    """A correct backward gives one result per input, in order, with errors ~1e-9 or below."""
    x, y = _xy()
    results = check_layer(_forward, _backward, [x, y], names=["x", "y"])
    assert [r.name for r in results] == ["x", "y"]
    assert all(isinstance(r, GradcheckResult) and 0.0 <= r.error < 1e-8 for r in results)
    assert all(len(r.index) == 2 for r in results)


@given(seed=seeds, which=st.integers(0, 1), i=st.integers(0, 2), j=st.integers(0, 3))
def test_catches_one_wrong_element_and_names_it(seed, which, i, j):
    """A 0.1% error in one element of one gradient raises GradcheckError naming the input and the element, and
    the reported error is that element's relative error (against the floor when the element is small)."""
    x, y = _xy(seed)
    dout = rand(np.random.default_rng(seed + 1), 3, 4)
    grads = _backward(dout, (x, y, 2))
    a = abs(grads[which][i, j])
    # the absolute part: rtol * 1e-4 * the largest gradient element of either input, plus the FD round-off
    scale = max(max(np.abs(g).max() for g in grads), 1.001 * a)
    out = _forward(x, y)[0]
    noise = 10.0 * 1.5 * np.finfo(np.float64).eps * np.sum(np.abs(out) * np.abs(dout)) / 1e-3
    expected = 0.001 * a / (1.001 * a + 1e-4 * scale + noise / 1e-6)
    assume(expected > 1e-5)  # an element ~1e-7 of the largest is below the check's resolution by design
    name = "xy"[which]
    with pytest.raises(GradcheckError, match=rf"^gradient check failed for {name}\[{i}, {j}\]: analytic "):
        check_layer(_forward, _nudged_backward(which, (i, j)), [x, y], names=["x", "y"], dout=dout)
    results = check_layer(_forward, _nudged_backward(which, (i, j)), [x, y], names=["x", "y"], dout=dout,
                          raise_on_failure=False)
    bad, good = results[which], results[1 - which]
    assert bad.index == (i, j) and bad.name == name
    assert bad.error == pytest.approx(expected, rel=1e-4)
    assert bad.analytic == pytest.approx(1.001 * bad.numeric, rel=1e-7)
    assert good.error < 1e-8


def test_catches_a_scaled_gradient():
    """Scaling a whole gradient by 1.001 is caught, and the default names are inputs[i]."""
    x, y = _xy()

    def backward(dout, cache):
        dx, dy = _backward(dout, cache)
        return dx, dy * 1.001

    with pytest.raises(GradcheckError, match=r"inputs\[1\]"):
        check_layer(_forward, backward, [x, y])


def test_tolerance_is_respected():
    """A 1e-3 relative error passes with tol=1e-2 and fails with the default 1e-6."""
    x, y = _xy()
    check_layer(_forward, _nudged_backward(0, (1, 1)), [x, y], tol=1e-2)
    with pytest.raises(GradcheckError):
        check_layer(_forward, _nudged_backward(0, (1, 1)), [x, y])


def test_detects_forward_that_modifies_its_input():
    """A forward writing into its input is reported, by input name."""
    def forward(x, y):
        out, cache = _forward(x.copy(), y)
        x *= 2.0
        return out, cache

    x, y = _xy()
    with pytest.raises(GradcheckError, match="^x: forward modified this input in place"):
        check_layer(forward, _backward, [x, y], names=["x", "y"])


@given(seed=seeds)
def test_does_not_modify_inputs(seed):
    """check_layer and numerical_gradient leave every input (and dout) as they were."""
    x, y = _xy(seed)
    k = np.array(3)
    dout = rand(np.random.default_rng(seed + 1), 3, 4)
    before = [x.copy(), y.copy(), k.copy(), dout.copy()]
    check_layer(_forward, _backward, [x, y, k], dout=dout, names=["x", "y", "k"])
    numerical_gradient(_forward, [x, y, k], 0, dout)
    for a, b in zip(before, [x, y, k, dout]):
        assert np.array_equal(a, b)


def test_integer_inputs_are_skipped_by_default_and_wrt_selects():
    """Default wrt: the floating-point arrays only; explicit wrt checks just those inputs."""
    x, y = _xy()
    results = check_layer(_forward, _backward, [x, y, np.array(3)], names=["x", "y", "k"])
    assert [r.name for r in results] == ["x", "y"]
    results = check_layer(_forward, lambda d, c: _backward(d, c)[1], [x, y], wrt=[1], names=["x", "y"])
    assert [r.name for r in results] == ["y"]


def test_wrong_number_or_shape_of_gradients():
    """Too few gradients, or a gradient of the wrong shape, is an error naming the problem."""
    x, y = _xy()
    with pytest.raises(GradcheckError, match=r"backward returned 1 gradient\(s\), expected 2"):
        check_layer(_forward, lambda d, c: _backward(d, c)[0], [x, y])
    with pytest.raises(GradcheckError, match=r"^y: gradient has shape \(4, 3\), expected \(3, 4\)"):
        check_layer(_forward, lambda d, c: (_backward(d, c)[0], _backward(d, c)[1].T), [x, y], names=["x", "y"])


def test_an_integer_output_is_named_not_the_backward():
    """Issue 42, item 13: a forward whose output is integer (rounded, or cast) has zero finite differences,
    so the backward was blamed ("analytic 3 vs numeric 0"); the output's dtype is the problem, and it is named."""
    x, _ = _xy()
    with pytest.raises(ValueError, match=r"^forward: returned an int64 output; finite differences of an integer "
                                         r"output are all zero, so no gradient can be checked: return a "
                                         r"floating-point output$"):
        check_layer(lambda x: ((3 * x).astype(np.int64), None), lambda d, c: 3.0 * d, [x])
    with pytest.raises(ValueError, match=r"^forward: returned a bool output"):
        check_layer(lambda x: (x > 0, None), lambda d, c: 0.0 * d, [x])


def test_integer_only_inputs_are_named():
    """Issue 42, item 13: inputs of which none is floating point gave "backward returned 1 gradient(s),
    expected 0"; the inputs are named, and so is an integer input chosen by wrt."""
    k = np.arange(12).reshape(3, 4)
    with pytest.raises(ValueError, match=r"^inputs: none is a floating-point array \(got int64\), so there is no "
                                         r"gradient to check; pass float64 inputs \(x.astype\(np.float64\)\)$"):
        check_layer(lambda k: (k * 2.0, None), lambda d, c: 2.0 * d, [k])
    with pytest.raises(ValueError, match=r"^k: an int64 input has no gradient to check; pass it as float64 "
                                         r"\(x.astype\(np.float64\)\) or leave it out of wrt$"):
        check_layer(lambda k: (k * 2.0, None), lambda d, c: 2.0 * d, [k], wrt=[0], names=["k"])


def test_forward_must_return_out_and_cache():
    """A forward returning three values (sdpa_forward's out, lse, cache) or a bare array is a one-line error
    saying what to wrap, not an unpacking error; the wrapped pair then passes."""
    from npgpt.layers import sdpa_backward, sdpa_forward
    rng = np.random.default_rng(2)
    q, k, v = rand(rng, 1, 2, 3, 4), rand(rng, 1, 1, 3, 4), rand(rng, 1, 1, 3, 4)
    with pytest.raises(ValueError, match=r"^forward: expected it to return \(out, cache\), got a tuple of 3;"):
        check_layer(sdpa_forward, sdpa_backward, [q, k, v])
    with pytest.raises(ValueError, match=r"^forward: .* got ndarray;"):
        check_layer(lambda x: x * 2.0, lambda d, c: 2.0 * d, [q])

    def forward(q, k, v):
        out, _, cache = sdpa_forward(q, k, v, causal=True)
        return out, cache
    check_layer(forward, lambda d, c: tuple(sdpa_backward(d, c)[:3]), [q, k, v])


def test_explicit_dout_is_used():
    """A backward that ignores dout and returns ones is right for dout = ones and wrong for a random dout."""
    x = rand(np.random.default_rng(0), 5)

    def ones_backward(dout, cache):
        return np.ones_like(cache)

    check_layer(lambda x: (x.copy(), x), ones_backward, [x], dout=np.ones(5))
    with pytest.raises(GradcheckError):
        check_layer(lambda x: (x.copy(), x), ones_backward, [x])


def test_scalar_output():
    """A 0-d output (a loss) works: dout is a scalar."""
    x = rand(np.random.default_rng(0), 2, 3)
    results = check_layer(lambda x: (np.asarray(np.sum(x ** 2)), x), lambda d, x: 2.0 * d * x, [x], names=["x"])
    assert results[0].error < 1e-9


def test_numerical_gradient_is_fourth_order():
    """For f = x^5 the five-point stencil's error is exactly -(h^4 / 30) f^(5) = -4 h^4; cubics are exact."""
    x = np.array([0.3, -1.2, 2.0])
    h = 1e-2
    g5 = numerical_gradient(lambda x: x ** 5, [x], 0, np.ones(3), h=h)
    np.testing.assert_allclose(g5 - 5 * x ** 4, -4 * h ** 4, rtol=1e-4)
    g3 = numerical_gradient(lambda x: x ** 3, [x], 0, np.ones(3), h=h)
    np.testing.assert_allclose(g3, 3 * x ** 2, rtol=1e-12)


def test_numerical_gradient_of_a_view_output():
    """A forward returning a view of its (perturbed) input is handled: grad of sum(x.T * d) is d.T."""
    x = rand(np.random.default_rng(0), 2, 3)
    d = rand(np.random.default_rng(1), 3, 2)
    np.testing.assert_allclose(numerical_gradient(lambda x: x.T, [x], 0, d), d.T, rtol=1e-10)


def test_non_contiguous_input():
    """A transposed (Fortran-ordered) input is checked like any other."""
    x = rand(np.random.default_rng(0), 4, 3).T  # (3, 4), F-contiguous
    y = rand(np.random.default_rng(1), 3, 4)
    check_layer(_forward, _backward, [x, y], names=["x", "y"])


# ------------------------------------------------------------------------------------------ relative_error

# no tiny magnitudes: scaling by 1e-6 must not underflow into subnormals
elements = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False).map(lambda v: 0.0 if abs(v) < 1e-100 else v)
arrays = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=4), elements=elements)


def test_relative_error_known_values():
    """Elementwise |a - n| / max(|a|, |n|), worst element; 0 for equal or all-zero inputs."""
    assert relative_error([1.0, 2.0], [1.0, 2.002]) == pytest.approx(0.002 / 2.002, rel=1e-12)
    assert relative_error([1.0, -3.0], [1.0, -3.0]) == 0.0
    assert relative_error(np.zeros(4), np.zeros(4)) == 0.0
    assert relative_error([1.0], [-1.0]) == 2.0


def test_relative_error_floor():
    """Elements far below the largest are judged against floor * largest, not against themselves."""
    a, n = [1.0, 1e-9], [1.0, 2e-9]
    assert relative_error(a, n) == pytest.approx(1e-9 / 1e-4, rel=1e-9)
    assert relative_error(a, n, floor=0.0) == pytest.approx(0.5, rel=1e-12)


def test_relative_error_nan_is_not_small():
    """A nan anywhere makes the error nan (never <= tol), not 0."""
    assert not relative_error([1.0, np.nan], [1.0, 2.0]) <= 1.0
    assert not relative_error([1.0, 2.0], [1.0, np.nan]) <= 1.0


def test_relative_error_shape_mismatch():
    """Different shapes are a ValueError naming `analytic`."""
    with pytest.raises(ValueError, match="^analytic:"):
        relative_error(np.zeros(3), np.zeros(4))


@given(a=arrays, data=st.data(), c=st.sampled_from([1e-6, 3.0, 1e6]))
def test_relative_error_properties(a, data, c):
    """0 <= e <= 2, symmetric, invariant to a common scale, and 0 exactly when the arrays are equal."""
    n = data.draw(hnp.arrays(np.float64, a.shape, elements=elements), label="n")
    e = relative_error(a, n)
    assert 0.0 <= e <= 2.0
    assert relative_error(n, a) == e
    assert relative_error(c * a, c * n) == pytest.approx(e, rel=1e-12, abs=1e-300)
    assert relative_error(a, a.copy()) == 0.0
    assert (e == 0.0) == np.array_equal(a, n)


def test_result_str_names_input_and_element():
    """GradcheckResult prints name[index], both values and the error."""
    text = str(GradcheckResult("w", 0.5, (1, 2), 1.5, 1.0))
    assert text.startswith("w[1, 2]: analytic 1.5 vs numeric 1 ")
    assert "0.5" in text


# ------------------------------------------------------------- trustworthy verdicts (issue 10, item 1 and 13)

def _layernorm_args():
    from npgpt.layers import layernorm_backward, layernorm_forward
    x = np.random.default_rng(0).standard_normal((2, 5, 8))  # the README's x: default_rng(0), as users write
    w = 1.0 + 0.1 * np.random.default_rng(1).standard_normal(8)
    b = 0.1 * np.random.default_rng(2).standard_normal(8)
    return layernorm_forward, layernorm_backward, x, w, b


def test_readme_layernorm_passes():
    """The README snippet's call: x from default_rng(0), w ones, b zeros, default dout.  It used to fail on
    round-off because the default dout was the same draw as x (LayerNorm's dx in the direction of x is ~0)."""
    f, b, x, _, _ = _layernorm_args()
    results = check_layer(f, b, [x, np.ones(8), np.zeros(8)])
    assert all(r.error < 1e-8 for r in results)


def test_default_dout_is_not_a_callers_default_rng_draw():
    """The default upstream gradient comes from its own seed, not default_rng(0)."""
    seen = []

    def backward(dout, cache):
        seen.append(dout.copy())
        return dout.copy()

    x = np.random.default_rng(0).standard_normal((3, 4))
    check_layer(lambda x: (x.copy(), None), backward, [x])
    for seed in range(10):
        assert not np.allclose(seen[0], np.random.default_rng(seed).standard_normal((3, 4)))


def test_dout_parallel_to_x_passes_on_correct_layernorm():
    """Even when dout equals x (dx is then pure round-off, ~1e-16), correct code passes: the absolute part of
    the tolerance is scaled to the largest gradient and the finite-difference noise."""
    f, b, x, _, _ = _layernorm_args()
    check_layer(f, b, [x, np.ones(8), np.zeros(8)], dout=x, names=["x", "w", "b"])


@pytest.mark.parametrize("dout_kind", ["random", "parallel to x"])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_wrong_gradient_in_each_position_is_caught_and_named(which, dout_kind):
    """Scaling one of LayerNorm's three gradients by 1.01 fails naming exactly that input, never another."""
    f, b, x, w, bias = _layernorm_args()
    names = ["x", "w", "b"]

    def wrong(dout, cache):
        gs = list(b(dout, cache))
        gs[which] = gs[which] * 1.01 + (1e-3 if which == 0 else 0.0)  # dx may be ~0: also shift it
        return tuple(gs)

    dout = None
    if dout_kind == "parallel to x":  # the README's case: w ones, b zeros, dout the same draw as x: dx ~ 0
        w, bias, dout = np.ones(8), np.zeros(8), x
    with pytest.raises(GradcheckError) as e:
        check_layer(f, wrong, [x, w, bias], dout=dout, names=names)
    msg = str(e.value)
    assert f"for {names[which]}[" in msg
    for other in set(names) - {names[which]}:
        assert f"{other}[" not in msg
    results = check_layer(f, wrong, [x, w, bias], dout=dout, names=names, raise_on_failure=False)
    assert [r.error > 1e-6 for r in results] == [k == which for k in range(3)]


def test_every_failing_input_is_named():
    """Two wrong gradients: both named in one error."""
    x, y = _xy()

    def backward(dout, cache):
        dx, dy = _backward(dout, cache)
        return dx * 1.01, dy * 1.01

    with pytest.raises(GradcheckError, match=r"for x\[.*; y\["):
        check_layer(_forward, backward, [x, y], names=["x", "y"])


def test_rtol_and_atol():
    """rtol loosens the relative part; atol the absolute part; tol is rtol's old name."""
    x, y = _xy()
    nudged = _nudged_backward(0, (1, 1), factor=1.001)
    with pytest.raises(GradcheckError, match=r"rtol=1e-06"):
        check_layer(_forward, nudged, [x, y])
    check_layer(_forward, nudged, [x, y], rtol=1e-2)
    check_layer(_forward, nudged, [x, y], tol=1e-2)
    check_layer(_forward, nudged, [x, y], rtol=1e-9, atol=1.0)  # |error| ~1e-3 < atol
    with pytest.raises(GradcheckError):
        check_layer(_forward, _backward, [x, y], rtol=1e-15, atol=0.0, h=1e-1)  # truncation error ~h^4
    with pytest.raises(ValueError, match="^rtol:"):
        check_layer(_forward, _backward, [x, y], rtol=-1.0)
    with pytest.raises(ValueError, match="^atol:"):
        check_layer(_forward, _backward, [x, y], atol=float("nan"))


def test_float32_inputs_get_guidance():
    """float32 inputs with the default tolerance: a ValueError naming the input and saying what to do; with
    an explicit rtol and h a float32 check runs (and still catches a 10% error)."""
    f, b, x, w, bias = _layernorm_args()
    x32, w32, b32 = (a.astype(np.float32) for a in (x, w, bias))
    with pytest.raises(ValueError, match=r"^x: float32 input: .*float64 inputs.*rtol=1e-2, h=1e-2"):
        check_layer(f, b, [x32, w32, b32], names=["x", "w", "b"])
    check_layer(f, b, [x32, w32, b32], rtol=1e-2, h=1e-2)

    def wrong(dout, cache):
        dx, dw, db = b(dout, cache)
        return dx, dw * 1.1, db

    with pytest.raises(GradcheckError, match=r"for w\[.*float32 inputs"):
        check_layer(f, wrong, [x32, w32, b32], names=["x", "w", "b"], rtol=1e-2, h=1e-2)
