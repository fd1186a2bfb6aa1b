"""The segmentation losses (dice, jaccard, tversky, lovasz, generalized_dice).

References: segmentation_models_pytorch 0.6.0's own loss classes (DiceLoss, JaccardLoss,
TverskyLoss, LovaszLoss), loaded by path without smp's package ``__init__`` (which imports
torchvision); for generalized_dice, which smp lacks, values worked out by hand from Sudre et al.
(2017)'s formula with MONAI's weight rule (and, in the parity grid, a torch transcription of
MONAI's GeneralizedDiceLoss in the spec module). The full sample grids against the references
run in tests/test_parity.py; here: the contract choices (what "none" returns, what
sample_weight weighs), smp's edge cases, ties in lovasz's sort, and bad input."""

from __future__ import annotations

import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss
from multiloss.losses.segmentation import smp_losses

jax.config.update("jax_enable_x64", True)

BACKENDS = ("jax", "torch")
NAMES = ("dice", "jaccard", "tversky", "lovasz", "generalized_dice")
SMP = {"dice": "DiceLoss", "jaccard": "JaccardLoss", "tversky": "TverskyLoss"}


def _value_and_grad(backend, name, x, t, sample_weight=None, **opts):
    """Value (NumPy) and the gradient of its sum w.r.t. the input."""
    loss = multiloss.get(name, backend=backend, **opts)
    if backend == "jax":
        def f(z):
            out = loss(z, t, sample_weight=sample_weight)
            return jnp.sum(out), out

        (_, out), g = jax.value_and_grad(f, has_aux=True)(x)  # one trace
        return np.asarray(out), np.asarray(g)
    xt = torch.tensor(x, requires_grad=True)
    sw = None if sample_weight is None else torch.as_tensor(sample_weight)
    out = loss(xt, torch.as_tensor(t), sample_weight=sw)
    (g,) = torch.autograd.grad(out.sum(), xt)
    return out.detach().numpy(), g.numpy()


def _smp(name, x, t, **kw):
    xt = torch.tensor(x, requires_grad=True)
    out = getattr(smp_losses(), name)(**kw)(xt, torch.as_tensor(t))
    (g,) = torch.autograd.grad(out, xt)
    return out.detach().numpy(), g.numpy()


def _multiclass(rng, n=2, c=3, h=3, w=4):
    x = rng.normal(size=(n, c, h, w)) * 2
    t = rng.integers(0, c, size=(n, h, w))
    t.flat[:c] = np.arange(c)
    return x, t


# ---------------------------------------------------------------------------------------------
# the reference loader


def test_smp_losses_load_without_smps_package_init():
    mod = smp_losses()
    assert {"DiceLoss", "JaccardLoss", "TverskyLoss", "LovaszLoss"} <= set(dir(mod))
    # the stub parent: smp's own __init__ (torchvision, timm) never ran
    assert "segmentation_models_pytorch" not in sys.modules or "torchvision" not in sys.modules
    assert smp_losses() is mod


def test_import_multiloss_imports_no_framework():
    code = ("import sys, multiloss; multiloss.available('segmentation'); "
            "assert 'torch' not in sys.modules and 'jax' not in sys.modules")
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# the default reduction is smp's number; "none" gives the per-class losses


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky"])
@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_default_reduction_is_smps_value(backend, name, mode):
    rng = np.random.default_rng(0)
    x, t = _multiclass(rng)
    if mode == "binary":
        x, t = x[:, :1], (t > 0).astype(np.float64)  # target without the channel axis
    elif mode == "multilabel":
        t = (rng.random(x.shape) < 0.4).astype(np.float64)
    want, want_g = _smp(SMP[name], x, t, mode=mode)
    got, got_g = _value_and_grad(backend, name, x, t, mode=mode)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_none_is_per_class_and_sample_weight_weighs_classes(backend):
    rng = np.random.default_rng(1)
    x, t = _multiclass(rng, c=4)
    per = np.array([_smp("DiceLoss", x, t, mode="multiclass", classes=[k])[0]
                    for k in range(4)])
    none, _ = _value_and_grad(backend, "dice", x, t, reduction="none")
    assert none.shape == (4,)
    np.testing.assert_allclose(none, per, rtol=1e-13)
    np.testing.assert_allclose(none.mean(), _smp("DiceLoss", x, t, mode="multiclass")[0],
                               rtol=1e-13)
    s = np.array([0.0, 1.0, 2.0, 0.5])
    mean, _ = _value_and_grad(backend, "dice", x, t, sample_weight=s)
    np.testing.assert_allclose(mean, (s * per).sum() / s.sum(), rtol=1e-13)
    total, _ = _value_and_grad(backend, "dice", x, t, sample_weight=s, reduction="sum")
    np.testing.assert_allclose(total, (s * per).sum(), rtol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_classes_and_class_weights_as_smp(backend):
    rng = np.random.default_rng(2)
    x, t = _multiclass(rng)
    w = [0.5, 2.0, 1.25]  # float32-exact: smp casts class_weights to float32
    want, want_g = _smp("JaccardLoss", x, t, mode="multiclass", classes=[2, 0],
                        class_weights=w)
    got, got_g = _value_and_grad(backend, "jaccard", x, t, classes=[2, 0],
                                 class_weights=np.array(w))
    np.testing.assert_allclose(got, want, rtol=1e-13)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-11, atol=1e-15)
    # "none": w_c l_c for the selected classes, in their order
    none, _ = _value_and_grad(backend, "jaccard", x, t, classes=[2, 0],
                              class_weights=np.array(w), reduction="none")
    per = [_smp("JaccardLoss", x, t, mode="multiclass", classes=[k])[0] for k in (2, 0)]
    np.testing.assert_allclose(none, [1.25 * per[0], 0.5 * per[1]], rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# values by hand


@pytest.mark.parametrize("backend", BACKENDS)
def test_dice_jaccard_tversky_by_hand(backend):
    # binary, probabilities: p = [0.9, 0.2, 0.6, 0.0], t = [1, 0, 1, 1]
    p = np.array([[[0.9, 0.2], [0.6, 0.0]]])  # (N=1, H, W) with target of the same shape
    t = np.array([[[1.0, 0.0], [1.0, 1.0]]])
    inter, fp, fn = 1.5, 0.2, 1.5
    want = {"dice": 1 - inter / (inter + 0.5 * fp + 0.5 * fn),
            "jaccard": 1 - inter / (inter + fp + fn),
            "tversky": 1 - inter / (inter + 0.3 * fp + 0.7 * fn)}
    for name, v in want.items():
        extra = {"alpha": 0.3, "beta": 0.7} if name == "tversky" else {}
        got, _ = _value_and_grad(backend, name, p, t, mode="binary", from_logits=False,
                                 **extra)
        np.testing.assert_allclose(got, v, rtol=1e-14, err_msg=name)
    # log_loss and smooth
    got, _ = _value_and_grad(backend, "dice", p, t, mode="binary", from_logits=False,
                             log_loss=True, smooth=1.0)
    np.testing.assert_allclose(got, -np.log((inter + 1) / (inter + 0.85 + 1)), rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_generalized_dice_by_hand(backend):
    # one image, two classes (multilabel probabilities), Sudre's w = 1 / G^2
    p = np.array([[[0.8, 0.1, 0.3], [0.2, 0.7, 0.0]]])
    t = np.array([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    inter = np.array([1.1, 0.7])
    g = np.array([2.0, 1.0])
    pr = p.sum(-1)[0]
    w = 1 / g**2
    want = 1 - (2 * (w * inter).sum() + 1e-5) / ((w * (g + pr)).sum() + 1e-5)
    got, _ = _value_and_grad(backend, "generalized_dice", p, t, mode="multilabel",
                             from_logits=False)
    np.testing.assert_allclose(got, want, rtol=1e-14)
    # a class absent from the image: its infinite weight becomes the image's largest (MONAI)
    t2 = t.copy()
    t2[0, 1] = 0.0
    w2 = np.array([0.25, 0.25])
    inter2 = np.array([1.1, 0.0])
    g2 = np.array([2.0, 0.0])
    want2 = 1 - (2 * (w2 * inter2).sum() + 1e-5) / ((w2 * (g2 + pr)).sum() + 1e-5)
    got2, _ = _value_and_grad(backend, "generalized_dice", p, t2, mode="multilabel",
                              from_logits=False)
    np.testing.assert_allclose(got2, want2, rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# smp's edge cases


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_absent_from_the_batch_has_loss_0_and_still_counts(backend):
    rng = np.random.default_rng(3)
    x, t = _multiclass(rng, c=4)
    t = np.where(t == 3, 0, t)  # class 3 absent everywhere
    none, g = _value_and_grad(backend, "dice", x, t, reduction="none")
    assert none[3] == 0.0 and np.all(none[:3] > 0)
    mean, _ = _value_and_grad(backend, "dice", x, t)
    np.testing.assert_allclose(mean, none.sum() / 4, rtol=1e-14)
    np.testing.assert_allclose(mean, _smp("DiceLoss", x, t, mode="multiclass")[0], rtol=1e-13)
    # no foreground at all: 0, with a zero gradient
    xb = rng.normal(size=(2, 1, 3, 3))
    out, g = _value_and_grad(backend, "dice", xb, np.zeros((2, 3, 3)), mode="binary")
    assert out == 0.0 and not g.any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["dice", "jaccard", "lovasz", "generalized_dice"])
def test_saturated_logits_give_finite_values_and_gradients(backend, name):
    rng = np.random.default_rng(4)
    x, t = _multiclass(rng, h=2, w=2)
    x = np.where(rng.random(x.shape) < 0.5, 1e4, -1e4)
    out, g = _value_and_grad(backend, name, x, t)
    assert np.isfinite(out).all() and np.isfinite(g).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignore_index_pixels_do_not_count(backend):
    rng = np.random.default_rng(5)
    x, t = _multiclass(rng)
    t2 = t.copy()
    t2[0, 0, :] = 255
    x2 = x.copy()
    x2[0, :, 0, :] = rng.normal(size=(3, 4)) * 5  # anything under ignored pixels
    for name in ("dice", "lovasz", "generalized_dice"):
        a, ga = _value_and_grad(backend, name, x, t2, ignore_index=255)
        b, gb = _value_and_grad(backend, name, x2, t2, ignore_index=255)
        np.testing.assert_allclose(a, b, rtol=1e-14, err_msg=name)
        assert not ga[0, :, 0, :].any() and not gb[0, :, 0, :].any(), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_tversky_gamma_applies_to_the_class_mean(backend):
    rng = np.random.default_rng(6)
    x, t = _multiclass(rng)
    want, want_g = _smp("TverskyLoss", x, t, mode="multiclass", alpha=0.3, beta=0.7, gamma=2.0)
    got, got_g = _value_and_grad(backend, "tversky", x, t, alpha=0.3, beta=0.7, gamma=2.0)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-11, atol=1e-15)
    none, _ = _value_and_grad(backend, "tversky", x, t, alpha=0.3, beta=0.7, gamma=2.0,
                              reduction="none")
    assert none.shape == () and none == got
    per, _ = _value_and_grad(backend, "tversky", x, t, alpha=0.3, beta=0.7, reduction="none")
    np.testing.assert_allclose(got, per.mean() ** 2, rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# lovasz


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_lovasz_float32_is_smps(backend, mode):
    # smp's LovaszLoss runs in float32 only (its Jaccard weights are float32; float64 input
    # raises in torch.dot): compare in float32
    rng = np.random.default_rng(7)
    x, t = _multiclass(rng)
    if mode == "binary":
        x, t = x[:, :1], (t > 0).astype(np.float32)
    elif mode == "multilabel":
        t = (rng.random(x.shape) < 0.4).astype(np.float32)
    x = x.astype(np.float32)
    for per_image in (False, True):
        want, want_g = _smp("LovaszLoss", x, t, mode=mode, per_image=per_image)
        got, got_g = _value_and_grad(backend, "lovasz", x, t, mode=mode, per_image=per_image)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
        np.testing.assert_allclose(got_g, want_g, rtol=2e-5, atol=1e-6)


def test_smps_lovasz_raises_in_float64():
    rng = np.random.default_rng(8)
    x, t = _multiclass(rng)
    with pytest.raises(RuntimeError, match="same dtype"):
        smp_losses().LovaszLoss("multiclass")(torch.tensor(x), torch.tensor(t))


@pytest.mark.parametrize("backend", BACKENDS)
def test_lovasz_ties_in_the_sort_are_broken_by_pixel_order(backend):
    """Tied errors: smp's torch.sort is stable up to 16 elements (its gradient is then ours),
    arbitrary beyond; multiloss sorts stably on both backends: its gradient is smp's with a
    stable sort, and the value (the same for every order) is smp's."""
    rng = np.random.default_rng(9)
    x = rng.choice([-1.0, 0.0, 1.0, 2.0], size=(1, 1, 6, 6))  # 36 logits, many ties
    t = (rng.random((1, 6, 6)) < 0.5).astype(np.float64)
    got, got_g = _value_and_grad(backend, "lovasz", x, t, mode="binary")
    small = (x[..., :2, :].copy(), t[..., :2, :].copy())  # 12 elements
    original = torch.sort
    try:
        torch.sort = lambda *a, **k: original(*a, **{**k, "stable": True})
        want, want_g = _smp("LovaszLoss", x.astype(np.float32), t.astype(np.float32),
                            mode="binary")
    finally:
        torch.sort = original
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-6, atol=1e-7)
    s_got, s_g = _value_and_grad(backend, "lovasz", *small, mode="binary")
    s_want, s_want_g = _smp("LovaszLoss", small[0].astype(np.float32),
                            small[1].astype(np.float32), mode="binary")
    np.testing.assert_allclose(s_got, s_want, rtol=1e-6)
    np.testing.assert_allclose(s_g, s_want_g, rtol=1e-6, atol=1e-7)


def test_lovasz_backends_agree_on_ties_beyond_16_elements():
    rng = np.random.default_rng(10)
    x = rng.choice([-1.0, 1.0], size=(2, 3, 4, 4))
    t = rng.integers(0, 3, size=(2, 4, 4))
    a = _value_and_grad("jax", "lovasz", x, t, per_image=True, reduction="none")
    b = _value_and_grad("torch", "lovasz", x, t, per_image=True, reduction="none")
    np.testing.assert_allclose(a[0], b[0], rtol=1e-14)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lovasz_hinge_tie_at_zero_passes_no_gradient(backend):
    # errors exactly 0 (logit +1 on label 1, -1 on label 0): relu passes no gradient there
    x = np.array([[[[1.0, -1.0, 0.5]]]])
    t = np.array([[[1.0, 0.0, 1.0]]])
    _, g = _value_and_grad(backend, "lovasz", x, t, mode="binary")
    assert g[0, 0, 0, 0] == 0.0 and g[0, 0, 0, 1] == 0.0 and g[0, 0, 0, 2] != 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_lovasz_shapes(backend):
    rng = np.random.default_rng(11)
    x, t = _multiclass(rng, n=3)
    assert _value_and_grad(backend, "lovasz", x, t, reduction="none")[0].shape == ()
    per, _ = _value_and_grad(backend, "lovasz", x, t, per_image=True, reduction="none")
    assert per.shape == (3,)
    mean, _ = _value_and_grad(backend, "lovasz", x, t, per_image=True)
    np.testing.assert_allclose(mean, per.mean(), rtol=1e-14)
    # every pixel of an image ignored: its loss is 0 (smp: an empty tensor)
    t2 = t.copy()
    t2[1] = 255
    per2, g2 = _value_and_grad(backend, "lovasz", x, t2, per_image=True, ignore_index=255,
                               reduction="none")
    assert per2[1] == 0.0 and not g2[1].any()


# ---------------------------------------------------------------------------------------------
# bad input


BAD_OPTIONS = [
    ("dice", {"mode": "binar"}, ValueError, r"mode: expected one of \['binary'"),
    ("dice", {"mode": "binary", "classes": [0]}, ValueError, r"classes: not supported"),
    ("jaccard", {"mode": "binary", "class_weights": np.ones(1)}, ValueError,
     r"class_weights: not supported"),
    ("tversky", {"classes": "ab"}, TypeError, r"classes: expected None or a non-empty list"),
    ("tversky", {"classes": [-1]}, ValueError, r"classes: expected class indices >= 0"),
    ("tversky", {"gamma": 0.0}, ValueError, r"gamma: expected a value in \(0"),
    ("dice", {"smooth": -1.0}, ValueError, r"smooth: expected a value in \[0"),
    ("dice", {"class_weights": np.ones((2, 2))}, ValueError, r"class_weights: expected a 1-D"),
    ("lovasz", {"from_logits": False}, ValueError, r"from_logits: smp's LovaszLoss ignores"),
    ("generalized_dice", {"w_type": "cube"}, ValueError, r"w_type: expected one of"),
    ("dice", {"ignore_index": 1.5}, ValueError, r"ignore_index: expected an integer"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,options,exc,pattern", BAD_OPTIONS)
def test_bad_options(backend, name, options, exc, pattern):
    with pytest.raises(exc, match=pattern):
        multiloss.get(name, backend=backend, **options)


X4 = np.zeros((2, 3, 2, 2))
BAD_INPUTS = [
    ("dice", {}, (X4, np.zeros((2, 2, 2))), TypeError,
     r"target: expected an integer array of class indices for mode='multiclass', got float64"),
    ("dice", {}, (X4, np.zeros((2, 2, 3), np.int64)), ValueError,
     r"target: expected shape \(2, 2, 2\) \(input's shape without the class axis\)"),
    ("jaccard", {"mode": "multilabel"}, (X4, np.zeros((2, 2, 2))), ValueError,
     r"target: expected shape \(2, 3, 2, 2\) for mode='multilabel', got shape \(2, 2, 2\)"),
    ("lovasz", {"mode": "binary"}, (np.zeros((2, 1, 2, 2)), np.zeros((2, 2, 3))), ValueError,
     r"target: expected shape \(2, 1, 2, 2\) or \(2, 2, 2\) for mode='binary'"),
    ("dice", {}, (np.zeros(3), np.zeros(3, np.int64)), ValueError,
     r"input: expected shape \(N, C, \*\) with at least 2 axes, got shape \(3,\)"),
    ("tversky", {}, (X4.astype(np.int64), np.zeros((2, 2, 2), np.int64)), TypeError,
     r"input: expected a floating-point array, got int64"),
    ("dice", {"classes": [3]}, (X4, np.zeros((2, 2, 2), np.int64)), ValueError,
     r"classes: expected class indices in \[0, 3\), got 3"),
    ("dice", {"class_weights": np.ones(2)}, (X4, np.zeros((2, 2, 2), np.int64)), ValueError,
     r"class_weights: expected one weight per class, shape \(3,\), got shape \(2,\)"),
    ("generalized_dice", {}, (X4, np.full((2, 2, 2), 3)), ValueError,
     r"target: expected class indices in \[0, 3\), got 3 at index \(0, 0, 0\)"),
    ("lovasz", {"ignore_index": 255}, (X4, np.full((2, 2, 2), -1)), ValueError,
     r"target: expected class indices in \[0, 3\) or equal ignore_index=255, got -1"),
    ("dice", {}, (X4, np.zeros((2, 2, 2), np.int64)), ValueError,
     r"sample_weight: expected an array that broadcasts to the unreduced loss of shape \(3,\)"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,options,inputs,exc,pattern", BAD_INPUTS)
def test_bad_inputs(backend, name, options, inputs, exc, pattern):
    loss = multiloss.get(name, backend=backend, **options)
    sw = np.ones(2) if "sample_weight" in pattern else None
    with pytest.raises(exc, match=pattern):
        loss(*inputs, sample_weight=sw)


def test_out_of_range_labels_under_jit_give_nan():
    loss = multiloss.get("dice", backend="jax")
    x, t = _multiclass(np.random.default_rng(12))
    t[0, 0, 0] = 7
    out = jax.jit(lambda a, b: loss(a, b))(x, t)
    assert np.isnan(out)


# ---------------------------------------------------------------------------------------------
# registry


@pytest.mark.parametrize("name", NAMES)
def test_info_names_the_reference(name):
    info = multiloss.info(name)
    assert info["family"] == "segmentation"
    ref = info["reference"]
    assert ("segmentation_models_pytorch" in ref) or ("MONAI" in ref)
    assert info["notes"]
    if name != "generalized_dice" and name != "lovasz":
        opts = {o["name"]: o["default"] for o in info["options"]}
        assert opts["from_logits"] is True and opts["smooth"] == 0.0 and opts["eps"] == 1e-7
        assert opts["log_loss"] is False and opts["ignore_index"] is None


@pytest.mark.parametrize("alias,name", [("DiceLoss", "dice"), ("focal_tversky", "tversky"),
                                        ("lovasz_softmax", "lovasz"),
                                        ("GeneralizedDiceLoss", "generalized_dice"),
                                        ("JaccardLoss", "jaccard")])
def test_aliases(alias, name):
    assert multiloss.resolve(alias).name == name


def test_docs_page_lists_every_loss():
    import pathlib

    text = (pathlib.Path(__file__).parent.parent / "docs" / "segmentation.md").read_text()
    for name in NAMES:
        assert re.search(rf"`{name}`", text), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_under_an_ignored_pixel_propagates_as_smp(backend):
    # smp zeroes ignored pixels by a product (NaN * 0 = NaN), not a select: both backends too
    x = np.array([[[[0.5, np.nan], [1.0, -1.0]]]])
    t = np.array([[[1.0, -1.0], [0.0, 1.0]]])
    want = smp_losses().DiceLoss("binary", ignore_index=-1)(torch.tensor(x), torch.tensor(t))
    got, _ = _value_and_grad(backend, "dice", x, t, mode="binary", ignore_index=-1)
    assert np.isnan(want.item()) and np.isnan(got)
