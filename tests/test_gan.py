"""gan_discriminator and gan_generator: every kind's value and gradient worked out by hand
from the papers' formulas (Goodfellow et al. 2014, Lim & Ye 2017 / Miyato et al. 2018, Arjovsky
et al. 2017, Mao et al. 2017), torch's numerics at logits of +-1e4, the hinge's tie, and bad
input. The parity with the torch.nn.functional transcription of the formulas (the spec's
reference) over the sample grid is in tests/test_parity.py and tests/test_hypothesis.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss
from multiloss.losses.generative import KINDS

jax.config.update("jax_enable_x64", True)

BACKENDS = ("jax", "torch")
TOL = 1e-12


def _run(backend, name, inputs, sample_weight=None, **options):
    """Value of the loss and the gradients of its sum w.r.t. every input."""
    loss = multiloss.get(name, backend=backend, **options)
    inputs = [np.asarray(x, np.float64) for x in inputs]
    if backend == "jax":
        def f(*xs):
            return jnp.sum(loss(*xs, sample_weight=sample_weight))

        value = loss(*inputs, sample_weight=sample_weight)
        grads = jax.grad(f, argnums=tuple(range(len(inputs))))(*inputs)
        return np.asarray(value), [np.asarray(g) for g in grads]
    ts = [torch.tensor(x, requires_grad=True) for x in inputs]
    sw = None if sample_weight is None else torch.as_tensor(sample_weight)
    out = loss(*ts, sample_weight=sw)
    grads = torch.autograd.grad(out.sum(), ts)
    return out.detach().numpy(), [g.numpy() for g in grads]


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# the papers' formulas in NumPy: (loss, d/d real, d/d fake) per element
def _disc_by_hand(kind, r, f):
    if kind in ("nonsaturating", "minimax"):
        # -log D(x) - log(1 - D(G(z))), D = sigmoid
        return _softplus(-r) + _softplus(f), _sigmoid(r) - 1.0, _sigmoid(f)
    if kind == "hinge":
        return (np.maximum(0, 1 - r) + np.maximum(0, 1 + f), -1.0 * (1 - r > 0),
                (1 + f > 0) * 1.0)
    if kind == "wasserstein":
        return f - r, -np.ones_like(r), np.ones_like(f)
    return 0.5 * (r - 1) ** 2 + 0.5 * f ** 2, r - 1.0, f


def _gen_by_hand(kind, f):
    if kind == "nonsaturating":
        return _softplus(-f), _sigmoid(f) - 1.0  # -log D(G(z))
    if kind == "minimax":
        return -_softplus(f), -_sigmoid(f)  # log(1 - D(G(z)))
    if kind in ("hinge", "wasserstein"):
        return -f, -np.ones_like(f)
    return 0.5 * (f - 1) ** 2, f - 1.0


R = np.array([2.0, -0.7, 0.3, 1.5, -3.0, 0.9])
F = np.array([-1.2, 0.4, 2.2, -0.1, 0.8, -2.5])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_discriminator_by_hand(backend, kind):
    want, dr, df = _disc_by_hand(kind, R, F)
    value, (gr, gf) = _run(backend, "gan_discriminator", (R, F), kind=kind, reduction="none")
    np.testing.assert_allclose(value, want, rtol=TOL, atol=0)
    np.testing.assert_allclose(gr, dr, rtol=TOL, atol=1e-15)
    np.testing.assert_allclose(gf, df, rtol=TOL, atol=1e-15)
    mean, _ = _run(backend, "gan_discriminator", (R, F), kind=kind)
    # the default 'mean' is the mean of the real term plus the mean of the fake term
    np.testing.assert_allclose(mean, want.mean(), rtol=TOL)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_generator_by_hand(backend, kind):
    want, df = _gen_by_hand(kind, F)
    value, (gf,) = _run(backend, "gan_generator", (F,), kind=kind, reduction="none")
    np.testing.assert_allclose(value, want, rtol=TOL, atol=0)
    np.testing.assert_allclose(gf, df, rtol=TOL, atol=1e-15)


def test_default_kind_is_nonsaturating():
    assert multiloss.info("gan_generator")["options"][1]["default"] == "nonsaturating"
    a, _ = _run("jax", "gan_generator", (F,))
    b, _ = _run("jax", "gan_generator", (F,), kind="nonsaturating")
    assert a == b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ("nonsaturating", "minimax"))
def test_saturated_logits_are_exact(backend, kind):
    """At logits of +-1e4 the BCE terms are exactly 0 or 1e4, the gradients exactly 0 or +-1
    (torch's binary_cross_entropy_with_logits), nothing overflows."""
    big = np.array([1e4, -1e4])
    value, (gr, gf) = _run(backend, "gan_discriminator", (big, big), kind=kind,
                           reduction="none")
    # real 1e4: BCE(1e4, 1) = 0; fake 1e4: BCE(1e4, 0) = 1e4; and the other way round
    np.testing.assert_array_equal(value, [1e4, 1e4])
    np.testing.assert_array_equal(gr, [0.0, -1.0])
    np.testing.assert_array_equal(gf, [1.0, 0.0])
    value, (gf,) = _run(backend, "gan_generator", (big,), kind=kind, reduction="none")
    if kind == "nonsaturating":
        np.testing.assert_array_equal(value, [0.0, 1e4])
        np.testing.assert_array_equal(gf, [0.0, -1.0])
    else:
        np.testing.assert_array_equal(value, [-1e4, -0.0])
        np.testing.assert_array_equal(gf, [-1.0, -0.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bce_rounds_as_torch(backend):
    """BCE(-30, 0) is torch's x - log_sigmoid(x): 9.2371e-14 in float64 (exactly 9.3576e-14)."""
    x = np.array([-30.0])
    want = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(x), torch.zeros(1, dtype=torch.float64), reduction="none").numpy()
    value, (gf,) = _run(backend, "gan_generator", (x,), kind="minimax", reduction="none")
    np.testing.assert_array_equal(value, -want)
    np.testing.assert_allclose(gf, -_sigmoid(x), rtol=TOL)  # torch's sigmoid(x) - t


@pytest.mark.parametrize("backend", BACKENDS)
def test_hinge_ties_have_zero_gradient(backend):
    """relu at 0 (real = 1, fake = -1 exactly): the loss 0 and the gradient 0, as torch."""
    value, (gr, gf) = _run(backend, "gan_discriminator", ([1.0, 1.0], [-1.0, 0.5]),
                           kind="hinge", reduction="none")
    np.testing.assert_array_equal(value, [0.0, 1.5])
    np.testing.assert_array_equal(gr, [0.0, 0.0])
    np.testing.assert_array_equal(gf, [0.0, 1.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_weight_and_empty(backend):
    sw = np.array([0.0, 1.0, 2.0, 0.5, 1.0, 3.0])
    want, _, _ = _disc_by_hand("least_squares", R, F)
    value, _ = _run(backend, "gan_discriminator", (R, F), sample_weight=sw,
                    kind="least_squares")
    np.testing.assert_allclose(value, (sw * want).sum() / sw.sum(), rtol=TOL)
    empty = np.zeros(0)
    value, _ = _run(backend, "gan_generator", (empty,))
    assert np.isnan(value)
    value, _ = _run(backend, "gan_generator", (empty,), empty_reduction="zero")
    assert value == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(backend):
    with pytest.raises(ValueError, match=r"kind: expected one of .*'hinge'.*got 'relativistic'"):
        multiloss.get("gan_generator", backend=backend, kind="relativistic")
    d = multiloss.get("gan_discriminator", backend=backend)
    with pytest.raises(ValueError, match=r"fake_logits: expected the shape of real_logits, "
                                         r"\(3,\), got \(4,\)"):
        d(np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError, match="real_logits: expected a floating-point array"):
        d(np.zeros(3, np.int64), np.zeros(3))
    with pytest.raises(TypeError, match="fake_logits: expected a floating-point array"):
        multiloss.get("gan_generator", backend=backend)(np.zeros(3, np.int32))
    with pytest.raises(TypeError, match=r"expected 2 inputs \(real_logits, fake_logits\)"):
        d(np.zeros(3))


def test_info_and_aliases():
    info = multiloss.info("gan_discriminator")
    assert info["family"] == "generative"
    assert "binary_cross_entropy_with_logits" in info["reference"]
    for kind in KINDS:
        assert kind in info["formula"]
    assert multiloss.resolve("generator_loss").name == "gan_generator"
    assert multiloss.resolve("discriminator_loss").name == "gan_discriminator"
