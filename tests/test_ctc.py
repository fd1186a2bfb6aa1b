"""ctc on both backends: values and gradients against a brute-force sum over every alignment
(independent of torch and of multiloss), torch's raw gradient and the true gradient through
log_softmax, impossible alignments, bad inputs, jit/grad/vmap, and optax.ctc_loss as a second
independent reference."""

from __future__ import annotations

import itertools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F

import multiloss

jax.config.update("jax_enable_x64", True)

BACKENDS = ("jax", "torch")


def _log_softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def min_frames(labels) -> int:
    """The fewest frames that can emit ``labels``: one per label, one blank between repeats."""
    labels = list(labels)
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))


def _collapse(path, blank):
    out = []
    for i, c in enumerate(path):
        if c != blank and (i == 0 or c != path[i - 1]):
            out.append(c)
    return out


def brute_force(lp, target, blank=0):
    """-log p(target) and the posterior gamma[t, c] of class c at frame t, by enumerating every
    path of len(lp) frames (pure NumPy, no recursion): the definition of the CTC loss."""
    n_frames, n_classes = lp.shape
    if n_frames == 0:
        return (0.0 if len(target) == 0 else math.inf), np.zeros((0, n_classes))
    probs, gamma = [], np.zeros(lp.shape)
    for path in itertools.product(range(n_classes), repeat=n_frames):
        if _collapse(path, blank) == list(target):
            p = math.exp(math.fsum(lp[t, c] for t, c in enumerate(path)))
            probs.append(p)
            for t, c in enumerate(path):
                gamma[t, c] += p
    total = math.fsum(probs)
    if total == 0.0:
        return math.inf, np.full(lp.shape, np.nan)
    return -math.log(total), gamma / total


def _run(backend, lp, tg, il, tl, grad=True, **options):
    """Value and gradient w.r.t. log_probs (cotangent 1 per sequence) on ``backend``."""
    loss = multiloss.get("ctc", backend=backend, **options)
    if backend == "jax":
        if not grad:
            return np.asarray(loss(lp, tg, il, tl)), None

        @jax.jit
        def f(x, tg, il, tl):
            def total(x):
                out = loss(x, tg, il, tl)
                return jnp.sum(out), out
            return jax.value_and_grad(total, has_aux=True)(x)

        (_, out), g = f(lp, tg, il, tl)
        return np.asarray(out), np.asarray(g)
    x = torch.tensor(lp, requires_grad=True)
    out = loss(x, torch.as_tensor(tg), torch.as_tensor(il), torch.as_tensor(tl))
    (g,) = torch.autograd.grad(out.sum(), x)
    return out.detach().numpy(), g.numpy()


def _torch_ref(lp, tg, il, tl, logits=False, **kw):
    x = torch.tensor(lp, requires_grad=True)
    inp = F.log_softmax(x, -1) if logits else x
    out = F.ctc_loss(inp, torch.as_tensor(tg), torch.as_tensor(il), torch.as_tensor(tl), **kw)
    (g,) = torch.autograd.grad(out.sum(), x)
    return out.detach().numpy(), g.numpy()


# every case feasible: targets with repeats, an empty one, input lengths below T
TARGETS = [[1], [1, 1], [2, 1], [], [1, 2, 1], [2]]
ILENS = [4, 4, 3, 2, 5, 0]


def _batch(rng, targets, ilens, n_frames=5, n_classes=3, normalised=True):
    x = rng.normal(size=(n_frames, len(targets), n_classes)) * 1.5
    lp = _log_softmax(x) if normalised else x
    width = max(len(t) for t in targets)
    tg = np.full((len(targets), width), -1)  # padding that is not a label: never read
    for b, t in enumerate(targets):
        tg[b, : len(t)] = t
    return lp, tg, np.array(ilens), np.array([len(t) for t in targets])


# ---------------------------------------------------------------------------------------------
# hand-checked values and gradients


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_frames_by_hand(backend):
    """T = 2, classes {blank, a}, target "a": the alignments are aa, _a and a_."""
    p = np.array([[0.3, 0.7], [0.6, 0.4]])  # p[t, c]
    want = -math.log(p[0, 1] * p[1, 1] + p[0, 0] * p[1, 1] + p[0, 1] * p[1, 0])
    lp = np.log(p)[:, None, :]
    out, _ = _run(backend, lp, np.array([[1]]), np.array([2]), np.array([1]), grad=False,
                  reduction="none")
    assert out.shape == (1,)
    np.testing.assert_allclose(out[0], want, rtol=1e-14)
    # one frame: the only alignment of "a" is a itself; of "" the blank
    for target, want in (([1], -math.log(0.7)), ([], -math.log(0.3))):
        tg = np.array([target or [0]])
        out, _ = _run(backend, lp[:1], tg, np.array([1]), np.array([len(target)]),
                      grad=False, reduction="none")
        np.testing.assert_allclose(out[0], want, rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalised", [True, False])
def test_against_brute_force_enumeration(backend, normalised):
    """Values against the sum over every path; the gradient is torch's exp(lp) * g - gamma on
    each sequence's frames (0 after), for normalised and for arbitrary log_probs alike."""
    rng = np.random.default_rng(0)
    lp, tg, il, tl = _batch(rng, TARGETS, ILENS, normalised=normalised)
    out, grad = _run(backend, lp, tg, il, tl, reduction="none")
    for b, target in enumerate(TARGETS):
        nll, gamma = brute_force(lp[: il[b], b], target)
        np.testing.assert_allclose(out[b], nll, rtol=1e-12)
        want = np.zeros((lp.shape[0], lp.shape[2]))
        want[: il[b]] = np.exp(lp[: il[b], b]) - gamma
        np.testing.assert_allclose(grad[:, b], want, rtol=1e-11, atol=1e-13)
    if not normalised:
        # the raw gradient is not the derivative of the loss, -gamma, on unnormalised input
        _, gamma = brute_force(lp[: il[0], 0], TARGETS[0])
        true = np.zeros_like(grad[:, 0])
        true[: il[0]] = -gamma
        assert np.abs(grad[:, 0] - true).max() > 0.1


@pytest.mark.parametrize("backend", BACKENDS)
def test_mean_divides_by_target_length(backend):
    rng = np.random.default_rng(1)
    lp, tg, il, tl = _batch(rng, TARGETS, ILENS)
    per, _ = _run(backend, lp, tg, il, tl, grad=False, reduction="none")
    mean, _ = _run(backend, lp, tg, il, tl, grad=False)
    np.testing.assert_allclose(mean, np.mean(per / np.maximum(tl, 1)), rtol=1e-14)
    ref = F.ctc_loss(torch.tensor(lp), torch.tensor(tg), torch.tensor(il), torch.tensor(tl))
    np.testing.assert_allclose(mean, ref.item(), rtol=1e-14)
    # with sample weights: sum_b s_b l_b / S_b / sum_b s_b
    s = rng.uniform(0.5, 2.0, size=len(TARGETS))
    loss = multiloss.get("ctc", backend=backend)
    conv = jnp.asarray if backend == "jax" else torch.as_tensor
    got = loss(conv(lp), conv(tg), conv(il), conv(tl), sample_weight=conv(s))
    want = np.sum(s * per / np.maximum(tl, 1)) / np.sum(s)
    np.testing.assert_allclose(float(got), want, rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# gradients: torch's raw one, and the true one through log_softmax


@pytest.mark.parametrize("backend", BACKENDS)
def test_raw_gradient_equals_torch_on_unnormalised_log_probs(backend):
    rng = np.random.default_rng(2)
    lp, tg, il, tl = _batch(rng, TARGETS, ILENS, normalised=False)
    out, grad = _run(backend, lp, tg, il, tl, reduction="none")
    ref_out, ref_grad = _torch_ref(lp, tg, il, tl, reduction="none")
    np.testing.assert_allclose(out, ref_out, rtol=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-14)


def test_log_softmax_composition_is_the_true_gradient():
    """ctc(log_softmax(logits)): JAX (custom VJP through jax.nn.log_softmax), torch, optax (plain
    autodiff of its own forward) and the brute-force posterior all give p - gamma."""
    rng = np.random.default_rng(3)
    logits, tg, il, tl = _batch(rng, TARGETS[:5], ILENS[:5], normalised=False)
    loss = multiloss.get("ctc", backend="jax", reduction="sum")
    g_jax = np.asarray(jax.jit(jax.grad(
        lambda z, tg, il, tl: loss(jax.nn.log_softmax(z), tg, il, tl)))(logits, tg, il, tl))
    _, g_torch = _torch_ref(logits, tg, il, tl, logits=True, reduction="sum")
    np.testing.assert_allclose(g_jax, g_torch, rtol=1e-12, atol=1e-14)
    x = torch.tensor(logits, requires_grad=True)
    lt = multiloss.get("ctc", backend="torch", reduction="sum")
    (g_ml_torch,) = torch.autograd.grad(
        lt(F.log_softmax(x, -1), *(torch.as_tensor(a) for a in (tg, il, tl))), x)
    np.testing.assert_allclose(g_ml_torch.numpy(), g_torch, rtol=1e-12, atol=1e-14)
    # the true gradient by enumeration: softmax - gamma on the frames of each sequence
    p = np.exp(_log_softmax(logits))
    for b, target in enumerate(TARGETS[:5]):
        _, gamma = brute_force(_log_softmax(logits)[: il[b], b], target)
        want = np.zeros_like(p[:, b])
        want[: il[b]] = p[: il[b], b] - gamma
        np.testing.assert_allclose(g_jax[:, b], want, rtol=1e-11, atol=1e-13)
    # optax: logits (B, T, K) and paddings; its gradient is autodiff of its forward
    pad_t = (np.arange(logits.shape[0])[None] >= il[:, None]).astype(float)
    pad_s = (np.arange(tg.shape[1])[None] >= tl[:, None]).astype(float)
    g_optax = jax.jit(jax.grad(lambda z, pt, t, ps: optax.ctc_loss(
        jnp.transpose(z, (1, 0, 2)), pt, t, ps).sum()))(logits, pad_t, np.where(tg < 0, 0, tg),
                                                         pad_s)
    np.testing.assert_allclose(g_jax, np.asarray(g_optax), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# impossible alignments


def _impossible_batch():
    rng = np.random.default_rng(4)
    # [1, 1] needs 3 frames (il = 2); [1, 2, 1] of length 3 > il = 2; input length 0 with a
    # non-empty target; then a feasible one
    targets, ilens = [[1, 1], [1, 2, 1], [2], [2, 1]], [2, 2, 0, 4]
    assert [min_frames(t) > i for t, i in zip(targets, ilens)] == [True, True, True, False]
    return _batch(rng, targets, ilens)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_impossible_alignment_is_inf_with_torch_nan_gradient(backend, reduction):
    lp, tg, il, tl = _impossible_batch()
    loss = multiloss.get("ctc", backend=backend, reduction=reduction)
    ref_out, ref_grad = _torch_ref(lp, tg, il, tl, reduction=reduction)
    if backend == "jax":
        out = loss(lp, tg, il, tl)
        grad = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(loss(x, tg, il, tl))))(lp))
    else:
        x = torch.tensor(lp, requires_grad=True)
        out = loss(x, *(torch.as_tensor(a) for a in (tg, il, tl)))
        (grad,) = torch.autograd.grad(out.sum(), x)
        out, grad = out.detach(), grad.numpy()
    out = np.asarray(out)
    np.testing.assert_array_equal(np.isinf(out), np.isinf(ref_out))
    if reduction == "none":
        assert np.isinf(out[:3]).all() and np.isfinite(out[3])
    # torch: NaN on every frame (< input length) of an infinite sequence, 0 after; 0 for the
    # sequence without frames; the feasible sequence's gradient is finite
    assert np.isnan(grad[:2, :2]).all() and (grad[2:, :2] == 0).all()
    assert (grad[:, 2] == 0).all() and np.isfinite(grad[:, 3]).all()
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(ref_grad))
    ok = ~np.isnan(ref_grad)
    np.testing.assert_allclose(grad[ok], ref_grad[ok], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_infinity_gives_zero_and_zero_gradient(backend):
    lp, tg, il, tl = _impossible_batch()
    out, grad = _run(backend, lp, tg, il, tl, reduction="none", zero_infinity=True)
    ref_out, ref_grad = _torch_ref(lp, tg, il, tl, reduction="none", zero_infinity=True)
    assert (out[:3] == 0).all() and (grad[:, :3] == 0).all()
    np.testing.assert_allclose(out, ref_out, rtol=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_target_longer_than_the_input_concatenated(backend):
    """Concatenated targets: the JAX backend bounds the states by T labels, a longer target is
    inf (as torch)."""
    rng = np.random.default_rng(5)
    lp = _log_softmax(rng.normal(size=(3, 2, 4)))
    tg, il, tl = np.array([1, 2, 3, 1, 2, 3]), np.array([3, 3]), np.array([5, 1])
    out, grad = _run(backend, lp, tg, il, tl, reduction="none")
    ref_out, ref_grad = _torch_ref(lp, tg, il, tl, reduction="none")
    assert np.isinf(out[0]) and np.isnan(grad[:, 0]).all()
    np.testing.assert_allclose(out, ref_out, rtol=1e-13)
    np.testing.assert_allclose(grad[:, 1], ref_grad[:, 1], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# layouts


@pytest.mark.parametrize("backend", BACKENDS)
def test_layouts_and_length_types(backend):
    """Padded and concatenated targets give the same losses; tuples of lengths (as torch takes
    them), unbatched input with () or (1,) lengths and (S,) or (1, S) targets."""
    rng = np.random.default_rng(6)
    lp, tg, il, tl = _batch(rng, TARGETS[:3], [5, 4, 3])
    loss = multiloss.get("ctc", backend=backend, reduction="none")
    conv = jnp.asarray if backend == "jax" else torch.as_tensor
    padded = np.asarray(loss(conv(lp), conv(tg), conv(il), conv(tl)))
    concat = np.concatenate([t for t in TARGETS[:3]])
    np.testing.assert_allclose(np.asarray(loss(conv(lp), conv(concat), tuple(il), tuple(tl))),
                               padded, rtol=1e-14)
    ref = F.ctc_loss(torch.tensor(lp), torch.tensor(concat), tuple(il), tuple(tl),
                     reduction="none")
    np.testing.assert_allclose(padded, ref.numpy(), rtol=1e-13)
    # unbatched: sequence 0 alone
    one = lp[:, 0]
    for t, i, n in ((np.array([1]), np.array(5), np.array(1)),
                    (np.array([[1, -1]]), np.array([5]), np.array([1]))):
        out = loss(conv(one), conv(t), conv(i), conv(n))
        assert tuple(out.shape) == ()
        np.testing.assert_allclose(float(out), padded[0], rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# bad inputs: the argument, what was expected, what came (both backends)


def _good():
    rng = np.random.default_rng(7)
    lp = _log_softmax(rng.normal(size=(5, 2, 4)))
    return lp, np.array([[1, 2, 0], [3, 3, 1]]), np.array([5, 4]), np.array([2, 3])


BAD_VALUES = [
    ("input_lengths", np.array([6, 4]), ValueError,
     r"^input_lengths: expected values in \[0, 5\] \(T = log_probs.shape\[0\]\), got 6 at "
     r"index \(0,\)"),
    ("input_lengths", np.array([5, -1]), ValueError,
     r"^input_lengths: expected values in \[0, 5\].*got -1 at index \(1,\)"),
    ("target_lengths", np.array([2, 4]), ValueError,
     r"^target_lengths: expected values in \[0, 3\] \(S = targets.shape\[1\], padded targets\), "
     r"got 4 at index \(1,\)"),
    ("target_lengths", np.array([-1, 3]), ValueError,
     r"^target_lengths: expected values >= 0, got -1 at index \(0,\)"),
    ("targets", np.array([[1, 4, 0], [3, 3, 1]]), ValueError,
     r"^targets: expected labels in \[0, 4\) other than blank=0 within target_lengths, got 4 "
     r"at index \(0, 1\)"),
    ("targets", np.array([[1, 2, 0], [3, -2, 1]]), ValueError,
     r"^targets: expected labels in \[0, 4\).*got -2 at index \(1, 1\)"),
    ("targets", np.array([[1, 2, 0], [3, 0, 1]]), ValueError,
     r"^targets: expected labels .* other than blank=0 .*got 0 at index \(1, 1\)"),
    # float targets are truncated to integers, as torch does (tests/test_torch_dtypes.py)
    ("targets", np.array([[1, 2, 0], [3, 3, 1]]).astype(np.complex128), TypeError,
     r"^targets: expected integer labels, got complex128 array of shape \(2, 3\)"),
    ("targets", np.array([[1, 2, 0]]), ValueError,
     r"^targets: expected padded targets of shape \(N, S\) with N = 2, or concatenated "
     r"targets of shape \(sum\(target_lengths\),\), got shape \(1, 3\)"),
    ("input_lengths", np.array([5.0, 4.0]), TypeError,
     r"^input_lengths: expected integer lengths, got float64 array of shape \(2,\)"),
    ("target_lengths", np.array([True, True]), TypeError,
     r"^target_lengths: expected integer lengths, got bool array"),
    ("input_lengths", np.array([5, 4, 3]), ValueError,
     r"^input_lengths: expected shape \(2,\), one length per sequence, got shape \(3,\)"),
    ("log_probs", np.zeros((5, 2, 4), np.int64), TypeError,
     r"^log_probs: expected floating-point log-probabilities, got int64 array of shape "
     r"\(5, 2, 4\)"),
    ("log_probs", np.zeros((5, 2, 4, 1)), ValueError,
     r"^log_probs: expected shape \(T, N, C\), or \(T, C\) unbatched, got shape \(5, 2, 4, 1\)"),
    ("log_probs", np.zeros((0, 2, 4)), ValueError,
     r"^log_probs: expected a non-empty array \(torch requires T, N and C >= 1\), got shape "
     r"\(0, 2, 4\)"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("arg", "value", "exc", "pattern"), BAD_VALUES,
                         ids=[f"{a}-{i}" for i, (a, *_) in enumerate(BAD_VALUES)])
def test_bad_input_names_the_argument(backend, arg, value, exc, pattern):
    names = ("log_probs", "targets", "input_lengths", "target_lengths")
    args = dict(zip(names, _good()))
    args[arg] = value
    conv = jnp.asarray if backend == "jax" else torch.as_tensor
    loss = multiloss.get("ctc", backend=backend)
    with pytest.raises(exc, match=pattern):
        loss(*(conv(args[n]) for n in names))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_concatenated_lengths_and_blank(backend):
    lp, _, il, _ = _good()
    loss = multiloss.get("ctc", backend=backend)
    with pytest.raises(ValueError, match=r"^target_lengths: expected values that sum to "
                       r"len\(targets\) = 5 \(concatenated targets\), got sum 4"):
        loss(lp, np.array([1, 2, 3, 3, 1]), il, np.array([2, 2]))
    with pytest.raises(ValueError, match=r"^blank: expected a label index in \[0, 4\) "
                       r"\(C = log_probs.shape\[-1\]\), got 4"):
        multiloss.get("ctc", backend=backend, blank=4)(lp, np.array([1, 2]), il, np.array([1, 1]))
    with pytest.raises(ValueError, match=r"^blank: expected a label index in \[0, C\), got -1"):
        multiloss.get("ctc", backend=backend, blank=-1)
    with pytest.raises(TypeError, match=r"^blank: expected an int, got float 1.0"):
        multiloss.get("ctc", backend=backend, blank=1.0)
    # the blank is another class with blank=3: label 0 is then fine, label 3 is not
    l3 = multiloss.get("ctc", backend=backend, blank=3)
    assert np.isfinite(float(l3(lp, np.array([[0, 1], [2, 0]]), il, np.array([2, 2]))))
    with pytest.raises(ValueError, match=r"other than blank=3 .*got 3 at index \(1, 0\)"):
        l3(lp, np.array([[0, 1], [3, 0]]), il, np.array([2, 2]))
    # unbatched lengths of the wrong shape
    with pytest.raises(ValueError, match=r"^target_lengths: expected shape \(\) or \(1,\) "
                       r"\(unbatched\), got shape \(2,\)"):
        loss(lp[:, 0], np.array([1, 2]), np.array(5), np.array([1, 1]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_is_not_read(backend):
    """Entries past a target's length are never read (any value, blank or out of range)."""
    lp, tg, il, tl = _good()
    loss = multiloss.get("ctc", backend=backend, reduction="none")
    base = np.asarray(loss(lp, tg, il, tl))
    tg2 = tg.copy()
    tg2[0, 2] = 99
    np.testing.assert_array_equal(np.asarray(loss(lp, tg2, il, tl)), base)


def test_invalid_values_under_a_trace_are_nan():
    """Where the values are traced (a user's jax.jit), an invalid label or length gives NaN
    (value and gradient) for that sequence, not a plausible number."""
    lp, tg, il, tl = _good()
    loss = multiloss.get("ctc", backend="jax", reduction="none")
    f = jax.jit(lambda *a: loss(*a))
    bad = tg.copy()
    bad[1, 0] = 7
    out = np.asarray(f(lp, bad, il, tl))
    assert np.isfinite(out[0]) and np.isnan(out[1])
    g = np.asarray(jax.jit(jax.grad(lambda x, t: jnp.sum(loss(x, t, il, tl))))(lp, bad))
    assert np.isnan(g[:, 1]).all() and np.isfinite(g[:, 0]).all()
    assert np.isnan(np.asarray(f(lp, tg, np.array([6, 4]), tl)))[0]
    # validate=False skips the value checks (the JAX loss is then NaN too)
    unchecked = multiloss.get("ctc", backend="jax", reduction="none", validate=False)
    assert np.isnan(np.asarray(unchecked(lp, bad, il, tl))[1])


# ---------------------------------------------------------------------------------------------
# JAX transformations, dtypes


def test_jax_jit_grad_and_vmap():
    rng = np.random.default_rng(8)
    lp, tg, il, tl = _batch(rng, TARGETS, ILENS)
    loss = multiloss.get("ctc", backend="jax")
    eager = float(loss(lp, tg, il, tl))
    # the lengths and targets traced: per-sequence lengths are data, not shapes
    jitted = jax.jit(lambda *a: loss(*a))
    np.testing.assert_allclose(float(jitted(lp, tg, il, tl)), eager, rtol=1e-14)
    g = jax.jit(jax.grad(lambda x, t, i, n: loss(x, t, i, n)))(lp, tg, il, tl)
    _, ref = _torch_ref(lp, tg, il, tl)
    np.testing.assert_allclose(np.asarray(g), ref, rtol=1e-12, atol=1e-15)
    # vmap over a leading batch of problems (unbatched calls)
    per = multiloss.get("ctc", backend="jax", reduction="none")
    lps = jnp.asarray(np.transpose(lp, (1, 0, 2)))  # (N, T, C): one unbatched (T, C) each
    vm = jax.vmap(lambda x, t, i, n: per(x, t[None], i, n))(lps, tg, il, tl)
    np.testing.assert_allclose(np.asarray(vm), np.asarray(per(lp, tg, il, tl)), rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32(backend):
    rng = np.random.default_rng(9)
    lp, tg, il, tl = _batch(rng, TARGETS, ILENS)
    lp32 = lp.astype(np.float32)
    out, grad = _run(backend, lp32, tg.astype(np.int32), il.astype(np.int32),
                     tl.astype(np.int32), reduction="none")
    assert out.dtype == np.float32 and grad.dtype == np.float32
    ref_out, ref_grad = _torch_ref(lp32, tg, il, tl, reduction="none")
    np.testing.assert_allclose(out, ref_out, rtol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_memory_is_linear_in_T():
    """The compiled value-and-gradient's temporary memory grows linearly with T."""
    loss = multiloss.get("ctc", backend="jax", reduction="sum")
    sizes = {}
    for n_frames in (100, 200, 400):
        lp = jax.ShapeDtypeStruct((n_frames, 4, 8), jnp.float32)
        tg = jax.ShapeDtypeStruct((4, 20), jnp.int32)
        ln = jax.ShapeDtypeStruct((4,), jnp.int32)
        f = jax.jit(jax.grad(lambda x, t, i, n: loss(x, t, i, n)))
        mem = f.lower(lp, tg, ln, ln).compile().memory_analysis()
        if mem is None:
            pytest.skip("no memory analysis on this backend")
        sizes[n_frames] = mem.temp_size_in_bytes + mem.output_size_in_bytes
    assert sizes[400] / sizes[200] < 2.2 and sizes[200] / sizes[100] < 2.2, sizes


# ---------------------------------------------------------------------------------------------
# optax as a second independent reference


def test_per_sequence_values_agree_with_optax():
    """optax.ctc_loss takes logits (B, T, K) and padding masks; on log_softmax outputs its
    log_softmax is the identity, so its per-sequence loss is ours (log(0) = -1e5 there)."""
    rng = np.random.default_rng(10)
    targets = [[1, 2, 3], [4], [], [2, 2, 4, 1], [3, 1]]
    lp, tg, il, tl = _batch(rng, targets, [9, 6, 3, 8, 2], n_frames=9, n_classes=5)
    ours = np.asarray(multiloss.get("ctc", backend="jax", reduction="none")(lp, tg, il, tl))
    pad_t = (np.arange(9)[None] >= il[:, None]).astype(float)
    pad_s = (np.arange(tg.shape[1])[None] >= tl[:, None]).astype(float)
    theirs = jax.jit(optax.ctc_loss)(np.transpose(lp, (1, 0, 2)), pad_t, np.where(tg < 0, 0, tg),
                                     pad_s)
    np.testing.assert_allclose(ours, np.asarray(theirs), rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# registry


def test_options_and_names_are_torchs():
    import inspect

    info = multiloss.info("CTCLoss")
    assert info["name"] == "ctc" and info["family"] == "sequence"
    assert multiloss.resolve("ctc_loss").name == "ctc"
    assert [i["name"] for i in info["inputs"]] == list(
        inspect.signature(F.ctc_loss).parameters)[:4]
    assert [i["differentiable"] for i in info["inputs"]] == [True, False, False, False]
    torch_opts = {k: p.default for k, p in inspect.signature(F.ctc_loss).parameters.items()
                  if p.default is not inspect.Parameter.empty}
    opts = {o["name"]: o["default"] for o in info["options"]}
    assert {k: opts[k] for k in torch_opts} == torch_opts
    assert set(opts) - set(torch_opts) == {"empty_reduction", "validate"}
    doc = multiloss.get("ctc", backend="jax").__doc__
    assert "torch.nn.functional.ctc_loss (torch 2.13)" in doc
    assert re.search(r"52241", doc) and "optax.ctc_loss" in doc
