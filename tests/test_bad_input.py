"""Bad inputs, on both backends: the exception class, and a message that names the argument,
says what was expected and what came."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import multiloss

jax.config.update("jax_enable_x64", True)

BACKENDS = ("jax", "torch")

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def _wrap(backend, kind="native"):
    """A converter of NumPy inputs: "numpy" keeps them, "native" gives the backend's arrays."""
    if kind == "numpy":
        return lambda a: a
    if backend == "jax":
        return jnp.asarray
    return torch.as_tensor


def _get(name, backend, **options):
    return multiloss.get(name, backend=backend, **options)


def _x(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def _value(out) -> np.ndarray:
    return np.asarray(out.detach().numpy() if isinstance(out, torch.Tensor) else out)


def esc(s) -> str:
    return re.escape(str(s))


# ---------------------------------------------------------------------------------------------
# shapes


@pytest.mark.parametrize("kind", ["numpy", "native"])
def test_cross_entropy_target_shape_mismatch(backend, kind):
    w = _wrap(backend, kind)
    ce = _get("cross_entropy", backend)
    with pytest.raises(
        ValueError,
        match=r"^target: expected class indices of shape \(3,\) for input of shape \(3, 5\), "
        r"got shape \(4,\)",
    ):
        ce(w(_x(3, 5)), w(np.zeros(4, np.int64)))


def test_cross_entropy_kdim_target_shape_mismatch(backend):
    ce = _get("cross_entropy", backend)
    with pytest.raises(ValueError, match=r"^target: expected class indices of shape \(2, 4\) "
                       r"for input of shape \(2, 3, 4\), got shape \(2, 3\)"):
        ce(_x(2, 3, 4), np.zeros((2, 3), np.int64))


def test_cross_entropy_float_target_of_neither_shape(backend):
    ce = _get("cross_entropy", backend)
    with pytest.raises(ValueError, match=r"^target: expected integer class indices of shape "
                       r"\(3,\) or class probabilities of shape \(3, 5\), got float64 array of "
                       r"shape \(4, 5\)"):
        ce(_x(3, 5), np.full((4, 5), 0.2))


@pytest.mark.parametrize("name", ["nll", "cross_entropy"])
def test_rank0_input_for_class_losses(backend, name):
    loss = _get(name, backend)
    with pytest.raises(ValueError, match=r"^input: expected shape \(C,\), \(N, C\) or "
                       r"\(N, C, d1, \.\.\., dk\), got shape \(\)"):
        loss(np.array(1.0), np.array(0))


@pytest.mark.parametrize("name", ["mse", "l1", "smooth_l1", "huber", "binary_cross_entropy",
                                  "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("tshape", [(3, 1), (5,), (3, 5, 1)])
def test_elementwise_target_shape_differs(backend, name, tshape):
    loss = _get(name, backend)
    x = np.full((3, 5), 0.5)
    with pytest.raises(ValueError, match=rf"^target: expected the shape of input, \(3, 5\), "
                       rf"got {esc(tshape)}"):
        loss(x, np.full(tshape, 0.5))


def test_kl_div_target_shape_differs(backend):
    loss = _get("kl_div", backend, reduction="batchmean")
    with pytest.raises(ValueError, match=r"^target: expected the shape of input, \(2, 3\), "
                       r"got \(2, 1\)"):
        loss(np.log(np.full((2, 3), 1 / 3)), np.ones((2, 1)))


# ---------------------------------------------------------------------------------------------
# class indices out of range


@pytest.mark.parametrize("kind", ["numpy", "native"])
@pytest.mark.parametrize("name", ["cross_entropy", "nll"])
@pytest.mark.parametrize(("bad", "pos"), [(5, 1), (7, 2), (-1, 0), (-5, 1)])
def test_class_index_out_of_range_raises(backend, kind, name, bad, pos):
    w = _wrap(backend, kind)
    loss = _get(name, backend)
    t = np.array([0, 1, 2])
    t[pos] = bad
    with pytest.raises(ValueError, match=rf"^target: expected class indices in \[0, 5\) or equal "
                       rf"ignore_index=-100, got {bad} at index \({pos},\)"):
        loss(w(_x(3, 5)), w(t))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_class_index_out_of_range_raises_for_every_reduction(backend, reduction):
    loss = _get("cross_entropy", backend, reduction=reduction, weight=np.ones(5),
                label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"^target: expected class indices in \[0, 5\).*got 5"):
        loss(_x(3, 5), np.array([0, 5, 1]), sample_weight=np.ones(3))


def test_class_index_out_of_range_kdim_and_unbatched(backend):
    ce = _get("cross_entropy", backend)
    t = np.zeros((2, 4), np.int64)
    t[1, 3] = 3
    with pytest.raises(ValueError, match=r"^target: expected class indices in \[0, 3\).*"
                       r"got 3 at index \(1, 3\)"):
        ce(_x(2, 3, 4), t)
    with pytest.raises(ValueError, match=r"^target: expected class indices in \[0, 3\).*got -2"):
        ce(_x(3), np.array(-2))


@pytest.mark.parametrize("name", ["cross_entropy", "nll"])
@pytest.mark.parametrize("ignore", [5, -1, 17])
def test_class_index_equal_to_ignore_index_is_fine(backend, name, ignore):
    w = _wrap(backend)
    x = _x(3, 5)
    t = np.array([0, ignore, 2])
    out = _get(name, backend, ignore_index=ignore, reduction="none")(w(x), w(t))
    f = F.cross_entropy if name == "cross_entropy" else F.nll_loss
    ref = f(torch.as_tensor(x), torch.as_tensor(t), ignore_index=ignore, reduction="none")
    np.testing.assert_allclose(_value(out), ref.numpy(), rtol=1e-12)
    assert _value(out)[1] == 0.0
    mean = _get(name, backend, ignore_index=ignore)(w(x), w(t))
    np.testing.assert_allclose(
        float(_value(mean)),
        f(torch.as_tensor(x), torch.as_tensor(t), ignore_index=ignore).item(), rtol=1e-12)
    # but the default ignore_index (-100) is then an out-of-range index
    if ignore != -100:
        with pytest.raises(ValueError, match=rf"^target: .*ignore_index={ignore}, got -100"):
            _get(name, backend, ignore_index=ignore)(w(x), w(np.array([0, -100, 2])))


def test_class_index_out_of_range_is_nan_inside_jit(backend):
    """Inside a user's jax.jit the values are unknown when checks run: the JAX loss is NaN (not a
    plausible number). On torch, a traced call still raises (the check runs on the values)."""
    x = _x(3, 5)
    if backend == "jax":
        for name in ("cross_entropy", "nll"):
            for bad in (5, -1):
                t = np.array([0, bad, 2])
                mean = jax.jit(_get(name, "jax").__call__)(x, t)
                assert np.isnan(float(mean)), (name, bad)
                total = jax.jit(lambda x, t, n=name: _get(n, "jax", reduction="sum")(x, t))(x, t)
                assert np.isnan(float(total))
                per = np.asarray(jax.jit(_get(name, "jax", reduction="none").__call__)(x, t))
                assert np.isnan(per[1]) and np.all(np.isfinite(per[[0, 2]]))
        # the same value as ignore_index is fine under jit
        ok = jax.jit(_get("cross_entropy", "jax", ignore_index=5).__call__)(x, np.array([0, 5, 2]))
        ref = F.cross_entropy(torch.as_tensor(x), torch.tensor([0, 5, 2]), ignore_index=5)
        np.testing.assert_allclose(float(ok), ref.item(), rtol=1e-12)
    else:
        ce = _get("cross_entropy", "torch")
        with pytest.raises(ValueError, match=r"^target: expected class indices in \[0, 5\)"):
            ce(torch.as_tensor(x), torch.tensor([0, 5, 2]))


@pytest.mark.parametrize("name", ["cross_entropy", "nll"])
def test_class_index_out_of_range_gradient_inside_jit(backend, name):
    """A traced call's gradient is not a plausible number either (JAX); torch raises on the
    values, with autograd on as well."""
    x, t = _x(3, 5), np.array([0, 5, 2])
    loss = _get(name, backend)
    if backend == "torch":
        xt = torch.tensor(x, requires_grad=True)
        with pytest.raises(ValueError, match=r"^target: expected class indices in \[0, 5\)"):
            loss(xt, torch.as_tensor(t))
        return
    g = jax.jit(jax.grad(lambda x, t: loss(x, t)))(x, t)
    assert not np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("dtype", [np.int32, np.int16, np.uint8])
@pytest.mark.parametrize("name", ["cross_entropy", "nll"])
def test_class_indices_of_any_integer_dtype(backend, name, dtype):
    """The checks accept class indices of any integer dtype (int32 is JAX's default); both
    backends then give torch's number for the int64 indices."""
    x, t = _x(3, 5), np.array([0, 4, 2])
    out = _get(name, backend)(_wrap(backend)(x), _wrap(backend)(t.astype(dtype)))
    f = F.cross_entropy if name == "cross_entropy" else F.nll_loss
    ref = f(torch.as_tensor(x), torch.as_tensor(t))
    np.testing.assert_allclose(float(_value(out)), ref.item(), rtol=1e-12)


def test_class_index_check_is_off_with_validate_false(backend):
    # validate=False skips the value check (shape and dtype checks still run)
    loss = _get("cross_entropy", backend, validate=False)
    with pytest.raises(ValueError, match=r"^target: expected class indices of shape"):
        loss(_x(3, 5), np.zeros(4, np.int64))
    if backend == "jax":
        assert np.isnan(float(loss(_x(3, 5), np.array([0, 5, 1]))))


# ---------------------------------------------------------------------------------------------
# dtypes


@pytest.mark.parametrize("kind", ["numpy", "native"])
def test_nll_float_target(backend, kind):
    w = _wrap(backend, kind)
    nll = _get("nll", backend)
    with pytest.raises(TypeError, match=r"^target: expected integer class indices of shape "
                       r"\(3,\), got float64 array of shape \(3,\)"):
        nll(w(_x(3, 5)), w(np.zeros(3)))
    # a float target of the input's shape is not class probabilities for nll
    with pytest.raises(TypeError, match=r"^target: expected integer class indices of shape "
                       r"\(3,\), got float64 array of shape \(3, 5\)"):
        nll(w(_x(3, 5)), w(np.full((3, 5), 0.2)))


@pytest.mark.parametrize("kind", ["numpy", "native"])
def test_cross_entropy_float_target_of_index_shape(backend, kind):
    w = _wrap(backend, kind)
    ce = _get("cross_entropy", backend)
    with pytest.raises(TypeError, match=r"^target: got float64 array of shape \(3,\), the shape of "
                       r"class indices but a floating dtype; class indices must be integers.*"
                       r"class probabilities must have the input's shape \(3, 5\)"):
        ce(w(_x(3, 5)), w(np.array([0.0, 1.0, 2.0])))


@pytest.mark.parametrize("name", ["cross_entropy", "nll"])
def test_bool_target_for_class_losses(backend, name):
    with pytest.raises(TypeError, match=r"^target: expected integer class indices of shape \(3,\)"
                       r".*got bool array of shape \(3,\)"):
        _get(name, backend)(_x(3, 5), np.array([True, False, True]))


@pytest.mark.parametrize("name", ["cross_entropy", "nll"])
def test_integer_input_for_class_losses(backend, name):
    with pytest.raises(TypeError, match=r"^input: expected floating-point scores, got int64 array "
                       r"of shape \(3, 5\)"):
        _get(name, backend)(np.ones((3, 5), np.int64), np.array([0, 1, 2]))


@pytest.mark.parametrize("kind", ["numpy", "native"])
@pytest.mark.parametrize("name", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
def test_integer_target_for_elementwise_losses(backend, kind, name):
    """torch's BCE refuses integer targets (tests/test_torch_dtypes.py asks torch)."""
    w = _wrap(backend, kind)
    with pytest.raises(TypeError, match=r"^target: expected a floating-point array \(as torch "
                       r"requires\), got int64 array of shape \(4,\)"):
        _get(name, backend)(w(np.full(4, 0.5)), w(np.array([0, 1, 1, 0])))


@pytest.mark.parametrize("kind", ["numpy", "native"])
@pytest.mark.parametrize("name", ["mse", "l1", "smooth_l1", "huber"])
def test_integer_target_promotes_for_regression_losses(backend, kind, name):
    """torch promotes an integer target to the input's floating dtype: so does multiloss."""
    w = _wrap(backend, kind)
    x, t = np.full(4, 0.5, np.float32), np.array([0, 1, 3, 0])
    out = _get(name, backend)(w(x), w(t))
    assert str(out.dtype).endswith("float32")
    assert float(out) == pytest.approx(float(_get(name, backend)(w(x), w(t.astype(np.float32)))))


def test_integer_input_for_elementwise_losses(backend):
    with pytest.raises(TypeError, match=r"^input: expected a floating-point array, got int64 "
                       r"array of shape \(4,\)"):
        _get("binary_cross_entropy", backend)(np.array([0, 1, 1, 0]), np.full(4, 0.5))
    # mse_loss promotes an integer input (torch's type promotion)
    out = _get("mse", backend)(np.array([0, 1, 1, 0]), np.full(4, 0.5))
    assert float(out) == pytest.approx(0.25)


def test_complex_sample_weight(backend):
    with pytest.raises(TypeError, match=r"^sample_weight: expected a real-valued array, got "
                       r"complex128 array of shape \(3,\)"):
        _get("mse", backend)(_x(3), _x(3), sample_weight=np.ones(3, np.complex128))


# ---------------------------------------------------------------------------------------------
# class weights


@pytest.mark.parametrize("name", ["cross_entropy", "nll"])
@pytest.mark.parametrize("n", [4, 6, 1])
def test_class_weight_of_wrong_length(backend, name, n):
    loss = _get(name, backend, weight=np.ones(n))
    with pytest.raises(ValueError, match=rf"^weight: expected one weight per class, shape \(5,\), "
                       rf"got shape \({n},\)"):
        loss(_x(3, 5), np.array([0, 1, 2]))


def test_class_weight_of_wrong_length_with_prob_target(backend):
    loss = _get("cross_entropy", backend, weight=np.ones(4))
    with pytest.raises(ValueError, match=r"^weight: expected one weight per class, shape \(5,\), "
                       r"got shape \(4,\)"):
        loss(_x(3, 5), np.full((3, 5), 0.2))


def test_class_weight_of_wrong_rank(backend):
    with pytest.raises(ValueError, match=r"^weight: expected a 1-D array, got shape \(1, 5\)"):
        _get("cross_entropy", backend, weight=np.ones((1, 5)))


def test_class_weight_not_an_array(backend):
    with pytest.raises(TypeError, match=r"^weight: expected an array \(NumPy, JAX or torch\), "
                       r"got str"):
        _get("cross_entropy", backend, weight="balanced")


def test_elementwise_weight_that_does_not_broadcast(backend):
    loss = _get("mse", backend, weight=np.ones(3))
    with pytest.raises(ValueError, match=r"^weight: expected a shape that broadcasts to \(3, 5\), "
                       r"got \(3,\)"):
        loss(_x(3, 5), _x(3, 5, seed=1))
    bce = _get("bce_with_logits", backend, pos_weight=np.ones(4))
    with pytest.raises(ValueError, match=r"^pos_weight: expected a shape that broadcasts to "
                       r"\(3, 5\), got \(4,\)"):
        bce(_x(3, 5), np.full((3, 5), 0.5))


# ---------------------------------------------------------------------------------------------
# sample weights


@pytest.mark.parametrize("kind", ["numpy", "native"])
def test_sample_weight_that_does_not_broadcast_suggests_the_fix(backend, kind):
    w = _wrap(backend, kind)
    mse = _get("mse", backend)
    with pytest.raises(ValueError, match=r"^sample_weight: expected an array that broadcasts to the "
                       r"unreduced loss of shape \(3, 5\), got shape \(3,\)\..*"
                       r"one weight per sample use w\[:, None\] \(shape \(3, 1\)\)"):
        mse(w(_x(3, 5)), w(_x(3, 5, seed=1)), sample_weight=w(np.ones(3)))
    # the suggested fix works
    out = mse(w(_x(3, 5)), w(_x(3, 5, seed=1)), sample_weight=w(np.ones(3)[:, None]))
    np.testing.assert_allclose(float(_value(out)), np.mean((_x(3, 5) - _x(3, 5, seed=1)) ** 2),
                               rtol=1e-12)


def test_sample_weight_rank3_suggestion(backend):
    with pytest.raises(ValueError, match=r"w\[:, None, None\] \(shape \(2, 1, 1\)\)"):
        _get("l1", backend)(_x(2, 3, 4), _x(2, 3, 4), sample_weight=np.ones(2))


@pytest.mark.parametrize("sw_shape", [(4,), (2, 3), (3, 5, 1)])
def test_sample_weight_of_wrong_shape(backend, sw_shape):
    with pytest.raises(ValueError, match=rf"^sample_weight: expected an array that broadcasts to "
                       rf"the unreduced loss of shape \(3, 5\), got shape {esc(sw_shape)}"):
        _get("mse", backend)(_x(3, 5), _x(3, 5), sample_weight=np.ones(sw_shape))


def test_sample_weight_of_class_input_shape_for_cross_entropy(backend):
    # the unreduced cross-entropy has the class axis removed
    with pytest.raises(ValueError, match=r"^sample_weight: expected an array that broadcasts to "
                       r"the unreduced loss of shape \(3,\), got shape \(3, 5\)"):
        _get("cross_entropy", backend)(_x(3, 5), np.array([0, 1, 2]), sample_weight=np.ones((3, 5)))


# ---------------------------------------------------------------------------------------------
# probability targets


@pytest.mark.parametrize("ignore", [0, 1, -1])
def test_prob_target_with_ignore_index(backend, ignore):
    loss = _get("cross_entropy", backend, ignore_index=ignore)
    with pytest.raises(ValueError, match=rf"^ignore_index: not supported with class-probability "
                       rf"targets \(as in torch\); expected the default -100, got {ignore}"):
        loss(_x(3, 5), np.full((3, 5), 0.2))
    # class indices with the same loss are fine
    loss(_x(3, 5), np.array([2, 3, 4]))


# ---------------------------------------------------------------------------------------------
# calls


@pytest.mark.parametrize("n_inputs", [0, 1, 3])
def test_wrong_number_of_inputs(backend, n_inputs):
    loss = _get("cross_entropy", backend)
    args = (_x(3, 5), np.array([0, 1, 2]), np.ones(3))[:n_inputs]
    with pytest.raises(TypeError, match=rf"^cross_entropy: expected 2 inputs \(input, target\), "
                       rf"got {n_inputs}$"):
        loss(*args)


def test_sample_weight_passed_positionally(backend):
    # a third positional array is not taken as the sample weight
    with pytest.raises(TypeError, match=r"^mse: expected 2 inputs \(input, target\), got 3$"):
        _get("mse", backend)(_x(3), _x(3), np.ones(3))


def test_unknown_call_keyword(backend):
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'weights'"):
        _get("mse", backend)(_x(3), _x(3), weights=np.ones(3))


def _foreign(backend, a):
    """``a`` as the other backend's array."""
    return torch.as_tensor(a) if backend == "jax" else jnp.asarray(a)


@pytest.mark.parametrize("which", ["input", "target", "both"])
def test_other_backends_array(backend, which):
    loss = _get("mse", backend)
    x, t = _x(3), _x(3, seed=1)
    if which in ("input", "both"):
        x = _foreign(backend, x)
    if which in ("target", "both"):
        t = _foreign(backend, t)
    arg = "target" if which == "target" else "input"
    if backend == "jax":
        pattern = rf"^{arg}: expected a NumPy or JAX array, got a torch\.Tensor; use the torch backend"
    else:
        pattern = rf"^{arg}: expected a torch tensor or NumPy array, got a JAX array; use the jax backend"
    with pytest.raises(TypeError, match=pattern):
        loss(x, t)


def test_other_backends_sample_weight(backend):
    loss = _get("mse", backend)
    got = "torch\\.Tensor" if backend == "jax" else "JAX array"
    with pytest.raises(TypeError, match=rf"^sample_weight: expected .*got a {got}"):
        loss(_x(3), _x(3), sample_weight=_foreign(backend, np.ones(3)))


def test_not_an_array(backend):
    with pytest.raises(TypeError, match=r"^input: expected .*, got object"):
        _get("mse", backend)(object(), _x(3))


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", ">i4", "uint8"])
def test_class_index_check_reads_every_integer_dtype(backend, dtype):
    """The hot-path check (one maximum of the indices read as unsigned) against the plain
    definition, for every integer dtype and byte order, negative and too large indices."""
    from multiloss.losses._common import _all_below

    for values in ([0, 1, 2], [0, -1], [3, 0], [2, 2], [-128, 0]):
        t = np.array(values).astype(dtype)
        if (t.astype(np.int64) != values).any():  # not representable (uint8 of -1)
            continue
        assert _all_below(t, 3) == bool(((t >= 0) & (t < 3)).all()), (values, dtype)
        x = np.zeros((len(values), 3))
        loss = multiloss.get("cross_entropy", backend=backend)
        if _all_below(t, 3):
            loss(x, t)
        else:
            with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 3\)"):
                loss(x, t)


@pytest.mark.parametrize("kind", ["numpy", "native"])
@pytest.mark.parametrize("n", [3, 300])  # below and above the small-batch form of the test
@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8"])
@pytest.mark.parametrize("name", ["cross_entropy", "nll"])
def test_class_index_check_on_the_hot_path(backend, kind, n, dtype, name):
    """A loss called again with a signature it has seen (the cached hot path, its value test
    made once per signature) checks the indices as the first call did: the same message for
    an index too large or negative; ignore_index passes and gives torch's value."""
    w = _wrap(backend, kind)
    loss = _get(name, backend, reduction="sum")
    x = _x(n, 4)
    good = np.zeros(n, dtype)
    good[::2] = 3
    for _ in range(2):
        loss(w(x), w(good))
    bad = [(n - 1, 4), (0, 9)] + ([(n // 2, -1), (1, -7)] if dtype != "uint8" else [])
    for pos, value in bad:
        t = good.copy()
        t[pos] = value
        with pytest.raises(ValueError, match=rf"^target: expected class indices in \[0, 4\) "
                           rf"or equal ignore_index=-100, got {value} at index \({pos},\)"):
            loss(w(x), w(t))
    if dtype != "uint8":
        t = good.copy()
        t[1] = -100
        out = loss(w(x), w(t))
        f = F.cross_entropy if name == "cross_entropy" else F.nll_loss
        ref = f(torch.as_tensor(x), torch.as_tensor(t.astype(np.int64)), reduction="sum")
        np.testing.assert_allclose(float(_value(out)), ref.item(), rtol=1e-12)
    # and the signature's cached path still gives the right value afterwards
    ref = (F.cross_entropy if name == "cross_entropy" else F.nll_loss)(
        torch.as_tensor(x), torch.as_tensor(good.astype(np.int64)), reduction="sum")
    np.testing.assert_allclose(float(_value(loss(w(x), w(good)))), ref.item(), rtol=1e-12)


def test_class_index_check_on_the_hot_path_kdim_and_unbatched(backend):
    """The cached hot path with K-dim targets (N, d) and an unbatched 0-d target: valid calls
    give torch's value, an out-of-range index raises as on the first call."""
    w = _wrap(backend)
    for x, good, bad, where in (
        (_x(2, 3, 4), np.zeros((2, 4), np.int64), ((1, 3), 3), " at index \\(1, 3\\)"),
        (_x(3), np.array(2), ((), -2), ""),
    ):
        loss = _get("cross_entropy", backend, reduction="sum")
        ref = F.cross_entropy(torch.as_tensor(x), torch.as_tensor(good), reduction="sum")
        for _ in range(2):
            np.testing.assert_allclose(float(_value(loss(w(x), w(good)))), ref.item(),
                                       rtol=1e-12)
        t = good.copy()
        t[bad[0]] = bad[1]
        with pytest.raises(ValueError, match=rf"^target: expected class indices in \[0, 3\).*"
                           rf"got {bad[1]}{where}"):
            loss(w(x), w(t))
