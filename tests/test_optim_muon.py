"""Muon and Adafactor (issue 18) beyond the trajectory cases of multiloss/optim/testing.py (run
by test_optim.py): torch's bfloat16 Newton-Schulz reproduced bit for bit, Muon's 2-D rule
and its recipe (Muon for the matrices, AdamW for the rest) as parameter groups of one
transform and as ``from_torch`` of the two torch optimizers, and both optimizers' validation
against torch's."""

from __future__ import annotations

import os
import platform

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.optim._muon import _zeropower_via_newtonschulz

import multiloss.optim as mo
from multiloss.optim import _jax as J
from multiloss.optim import testing as T

jax.config.update("jax_enable_x64", True)

LONG = os.environ.get("MULTILOSS_LONG") == "1"
COEF = (3.4445, -4.7750, 2.0315)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """torch's CPU bfloat16 matmul costs ~30 ms a call with 2 OpenMP threads on a loaded 2-core
    machine, microseconds with one (the matrices here are tiny)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _torch_ns(x, steps=5, eps=1e-7, coef=COEF):
    with torch.no_grad():
        return _zeropower_via_newtonschulz(torch.from_numpy(x), coef, steps, eps).float().numpy()


@pytest.mark.parametrize("shape", [(3, 4), (6, 2), (4, 4)])
def test_newton_schulz_is_torchs_bfloat16_iteration_bit_for_bit(shape):
    """torch's bfloat16 Newton-Schulz, float64 and float32 inputs, jitted: every output equal
    to torch's (small matrices: float32 sums of a few exact bfloat16 products round the same in
    any order). The same iteration in float32 without the bfloat16 rounding is 1e-3 away: the
    emulation is what matters."""
    rng = np.random.default_rng(sum(shape))
    ns = jax.jit(lambda u: J._newton_schulz(u, COEF, 5, 1e-7))
    for dtype in (np.float64, np.float32):
        for scale in (1.0, 1e-9, 30.0):  # 1e-9: below eps, clamped norm
            x = (scale * rng.normal(size=shape)).astype(dtype)
            ours = np.asarray(ns(jnp.asarray(x)))
            np.testing.assert_array_equal(ours, _torch_ns(x))
    x = rng.normal(size=shape)
    plain = np.asarray(jax.jit(lambda u: _plain_ns(u))(jnp.asarray(x, jnp.float32)))
    assert np.max(np.abs(plain - _torch_ns(x))) > 1e-4


def _plain_ns(x):
    a, b, c = COEF
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / jnp.maximum(jnp.linalg.norm(x), 1e-7)
    for _ in range(5):
        g = x @ x.T
        x = a * x + (b * g + c * g @ g) @ x
    return x.T if tall else x


def test_newton_schulz_options_and_nonfinite_as_torch():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 6))
    for steps, coef in ((0, COEF), (2, (2.0, -1.5, 0.5)), (7, COEF)):
        ours = np.asarray(jax.jit(lambda u, s=steps, c=coef: J._newton_schulz(u, c, s, 1e-7))(x))
        np.testing.assert_array_equal(ours, _torch_ns(x, steps, coef=coef))
    x[1, 2] = np.nan
    ours = np.asarray(jax.jit(lambda u: J._newton_schulz(u, COEF, 5, 1e-7))(x))
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(_torch_ns(x)))


# ---------------------------------------------------------------------------------------------
# ns_accumulation="torch_cpu": torch's own summation order, kernel by kernel


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


#: aten's small-matmul kernels: the dot product is its AVX2 build (x86 with AVX2 and FMA)
ATEN_X86 = platform.machine() in ("x86_64", "AMD64") and " avx2" in _cpu_flags() and \
    " fma" in _cpu_flags()
#: oneDNN's bfloat16 kernel with vdpbf16ps (AMX machines run other kernels)
ONEDNN_BF16 = "avx512_bf16" in _cpu_flags() and "amx_bf16" not in _cpu_flags()


def _cancelling(rng, m, k):
    """(m, k) bfloat16 numbers: in each row pairs +L, -L (L up to 2^20) among small ones, so
    that a float32 sum of a row depends on its order (an order other than torch's shows in
    the bfloat16 result)."""
    def bf16s(size, lo, hi):
        return rng.integers(128, 256, size) / 128 * 2.0 ** rng.integers(lo, hi, size)

    v = np.zeros((m, k))
    nb = k // 4 * 2
    for r in range(m):
        idx = rng.permutation(k)
        big = bf16s(nb // 2, 8, 20)
        v[r, idx[:nb:2]], v[r, idx[1:nb:2]] = big, -big
        v[r, idx[nb:]] = rng.choice([-1.0, 1.0], k - nb) * bf16s(k - nb, -6, 6)
    return v


@pytest.mark.parametrize(("m", "k", "n", "a_view", "b_view", "kernel"), [
    (8, 32, 8, False, True, "aten"),  # X @ X.T (X wide): AVX2 dot, blocks of 16 on 8 lanes
    (4, 100, 4, False, True, "aten"),  # ... and its blocks of 64 and single products
    (8, 8, 32, False, False, "aten"),  # G @ G, U @ X: four partial sums
    (8, 32, 8, True, False, "aten"),  # X @ X.T at a tall X's first step: sequential
    (16, 24, 20, True, False, "onednn"),  # m k n > 16^3: oneDNN, pairs (k + 1, k)
    (4, 700, 4, False, True, "onednn"),  # ... in blocks of 512 (k <= 1024)
    (4, 1100, 4, False, False, "onednn"),  # ... of 1024 (k > 1024, a contiguous)
    (4, 1100, 4, True, False, "onednn"),  # ... of 512 (a a transposed view)
])
def test_torch_cpu_matmul_sums_in_torchs_order(m, k, n, a_view, b_view, kernel):
    """torch's CPU bfloat16 mm and addmm (beta, alpha) bit for bit on sums whose float32
    rounding depends on the order: the kernel torch picks by size and by which operand is a
    transposed view. The correctly rounded sum ("exact") differs from torch on them."""
    if not (ATEN_X86 if kernel == "aten" else ONEDNN_BF16):
        pytest.skip(f"{kernel}'s order is measured on x86 AVX2 (aten) / AVX512-BF16 (oneDNN)")
    rng = np.random.default_rng(m * k + n)
    a, c = _cancelling(rng, m, k), rng.normal(size=(m, n))
    b = np.ones((k, n)) * np.round(rng.normal(size=(1, n)) * 64) / 64

    def bf(x, view):
        t = torch.from_numpy(np.ascontiguousarray(x.T if view else x)).bfloat16()
        return t.T if view else t

    ta, tb, tc = bf(a, a_view), bf(b, b_view), bf(c, False)
    ja, jb, jc = (jnp.asarray(t.float().numpy()) for t in (ta, tb, tc))
    sums = jax.jit(J._torch_cpu_mm, static_argnums=(2, 3))(ja, jb, a_view, b_view)
    f32 = jnp.float32
    with torch.no_grad():
        np.testing.assert_array_equal(np.asarray(J._bf16(sums)), (ta @ tb).float().numpy())
        if not a_view:  # the addmm forms of the iteration (U @ X at a tall X's first step)
            for beta, alpha in ((3.4445, None), (-4.775, 2.0315)):
                ours = J._bf16(J._addmm_sum(f32(beta), jc, None if alpha is None else f32(alpha),
                                            sums))
                ref = torch.addmm(tc, ta, tb, beta=beta, alpha=1.0 if alpha is None else alpha)
                np.testing.assert_array_equal(np.asarray(ours), ref.float().numpy())
    exact = np.asarray(J._bf16(J._bf16_dot(ja, jb)))
    assert np.any(exact != (ta @ tb).float().numpy())


@pytest.mark.skipif(not (ATEN_X86 and ONEDNN_BF16), reason="torch's CPU order is measured on "
                    "x86 with AVX512-BF16 (oneDNN) and AVX2 (aten)")
@pytest.mark.parametrize(("shape", "seed"), [((8, 32), 344), ((32, 8), 296), ((17, 16), 59)])
def test_newton_schulz_torch_cpu_is_torchs_iteration_bit_for_bit(shape, seed):
    """ns_accumulation="torch_cpu" against torch's Newton-Schulz, jitted, every bit: inputs
    on which one float32 sum of torch's rounds otherwise than in the order of oneDNN's kernel
    (the previous emulation, used for every matmul) or otherwise than the exact sum; (17, 16)
    mixes oneDNN (X @ X.T, U @ X) and aten (G @ G). Measured beyond these: 0 of 500 calls differ per shape for
    (8, 32), (32, 8), (16, 16), (16, 17), (17, 16), (7, 9), (1, 40), (4, 100) and their
    transposes, 0 of 40-200 for (12, 40), (2, 1000), (64, 64), (128, 256), (256, 128)."""
    x = np.random.default_rng(seed).normal(size=shape)
    ours = jax.jit(lambda u: J._newton_schulz(u, COEF, 5, 1e-7, "torch_cpu"))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(ours), _torch_ns(x))


# ---------------------------------------------------------------------------------------------
# 2-D only, and the recipe


def test_muon_refuses_other_ranks_naming_the_parameter():
    tx = mo.get("muon", lr=0.02)
    params = {"layer": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}}
    msg = (r"^muon: params\['layer'\]\['bias'\]: torch.optim.Muon only supports 2-D "
           r"parameters, got shape \(4,\); step the others with another optimizer")
    with pytest.raises(ValueError, match=msg):
        tx.init(params)
    state = tx.init({"w": jnp.ones((3, 4))})
    with pytest.raises(ValueError, match=r"params\['w'\]: torch.optim.Muon only supports 2-D "
                       r"parameters, got shape \(2, 3, 4\)"):
        tx.update({"w": jnp.ones((2, 3, 4))}, state, {"w": jnp.ones((2, 3, 4))})
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):  # torch: the same
        torch.optim.Muon([torch.zeros(4, requires_grad=True)])


def test_recipe_groups_take_the_other_optimizers_defaults_and_match_torch():
    """{"optimizer": "adamw"} starts from AdamW's torch defaults (weight_decay 1e-2, not
    Muon's 0.1): as a second torch optimizer over those parameters. Nested parameters,
    muon_labels, one jitted update; torch's Muon + AdamW give the same 5 steps."""
    rng = np.random.default_rng(0)
    p0 = {"dense": {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=3)},
          "scale": rng.normal(size=())}
    tx = mo.get("muon", lr=0.02, param_groups={"muon": {}, "adamw": {"optimizer": "adamw"}},
                labels=mo.muon_labels)
    assert tx.param_groups[1]["weight_decay"] == 0.01 and tx.param_groups[0]["weight_decay"] == 0.1
    assert tx.param_groups[1]["optimizer"] == "adamw" and "optimizer" not in tx.param_groups[0]
    assert mo.muon_labels(p0) == {"dense": {"kernel": "muon", "bias": "adamw"}, "scale": "adamw"}
    tp = jax.tree_util.tree_map(lambda v: torch.tensor(v, requires_grad=True), p0)
    opts = [torch.optim.Muon([tp["dense"]["kernel"]], lr=0.02),
            torch.optim.AdamW([tp["dense"]["bias"], tp["scale"]])]
    params = jax.tree_util.tree_map(jnp.asarray, p0)
    state = tx.init(params)
    assert state.buffers["exp_avg"]["dense"]["kernel"].shape == (0,)  # not Muon's: placeholder
    assert state.buffers["momentum_buffer"]["dense"]["bias"].shape == (0,)
    update = jax.jit(tx.update)
    for k in range(5):
        g = jax.tree_util.tree_map(lambda v, k=k: np.cos(v + k), p0)
        for t, gv in zip(jax.tree_util.tree_leaves(tp), jax.tree_util.tree_leaves(g)):
            t.grad = torch.from_numpy(np.asarray(gv))
        for o in opts:
            o.step()
        u, state = update(g, state, params)
        params = jax.tree_util.tree_map(lambda p, d: p + d, params, u)
        p0 = jax.tree_util.tree_map(lambda t: t.detach().numpy().copy(), tp)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(p0)):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-13, atol=1e-15)


def test_recipe_group_errors():
    with pytest.raises(ValueError, match=r"param_groups\['x'\]: optimizer: name: unknown "
                       r"optimizer 'adamx'"):
        mo.get("muon", param_groups={"m": {}, "x": {"optimizer": "adamx"}})
    with pytest.raises(TypeError, match=r"param_groups\['x'\]: adamw: unknown hyperparameter\(s\) "
                       r"'ns_steps'"):
        mo.get("muon", param_groups={"m": {}, "x": {"optimizer": "adamw", "ns_steps": 3}})
    with pytest.raises(ValueError, match=r"param_groups\[1\]: optimizer: LBFGS cannot share a "
                       r"transform with Muon"):
        mo.get("muon", param_groups=[{}, {"optimizer": "lbfgs"}])
    from multiloss.optim import schedules as S

    with pytest.raises(ValueError, match=r"schedule: OneCycleLR cycles momentum but Adagrad has "
                       r"no momentum or beta1"):
        mo.get("muon", param_groups=[{}, {"optimizer": "adagrad"}],
               schedule=S.OneCycleLR(0.1, total_steps=10))


def test_from_torch_of_the_recipe_errors():
    w = torch.zeros(3, 4, requires_grad=True)
    b = torch.zeros(4, requires_grad=True)
    with pytest.raises(ValueError, match=r"optimizer\[1\]: a parameter of shape \(3, 4\) is "
                       r"also in an earlier optimizer"):
        mo.from_torch([torch.optim.Muon([w]), torch.optim.AdamW([w, b])])
    opts = [torch.optim.Muon([w]), torch.optim.AdamW([b])]
    L = torch.optim.lr_scheduler
    with pytest.raises(ValueError, match=r"scheduler: the optimizers' schedulers differ"):
        mo.from_torch(opts, [L.StepLR(opts[0], 5), L.StepLR(opts[1], 6)])
    with pytest.raises(ValueError, match=r"scheduler: expected None or a list of 2 schedulers"):
        mo.from_torch(opts, L.StepLR(opts[0], 5))
    tx, labels = mo.from_torch(opts, [L.StepLR(opts[0], 5), L.StepLR(opts[1], 5)])
    assert labels == [0, 1] and [g.get("optimizer") for g in tx.param_groups] == [None, "adamw"]


# ---------------------------------------------------------------------------------------------
# validation: torch rejects the same values


def _muon(**kw):
    return torch.optim.Muon([torch.zeros(3, 2, requires_grad=True)], **kw)


def _adafactor(**kw):
    return torch.optim.Adafactor([torch.zeros(3, 2, requires_grad=True)], **kw)


BAD = [
    ("muon", {"lr": -0.1}, r"muon: lr: expected a value in \[0.0, inf\], got -0.1"),
    ("muon", {"momentum": -0.5}, r"muon: momentum: expected a value in \[0.0, inf\], got -0.5"),
    ("muon", {"weight_decay": -1.0}, r"muon: weight_decay: .*got -1.0"),
    ("muon", {"adjust_lr_fn": "rms"}, r"muon: adjust_lr_fn: expected one of \[None, 'original', "
                                      r"'match_rms_adamw'\], got 'rms'"),
    ("adafactor", {"lr": -1.0}, r"adafactor: lr: .*got -1.0"),
    ("adafactor", {"beta2_decay": 0.5}, r"adafactor: beta2_decay: expected a value in "
                                        r"\[-inf, 0.0\], got 0.5"),
    ("adafactor", {"eps": (-1.0, 1e-3)}, r"adafactor: eps\[0\]: .*got -1.0"),
    ("adafactor", {"eps": (None, -1e-3)}, r"adafactor: eps\[1\]: .*got -0.001"),
    ("adafactor", {"d": 0.5}, r"adafactor: d: expected a value in \[1.0, inf\], got 0.5"),
    ("adafactor", {"weight_decay": -0.1}, r"adafactor: weight_decay: .*got -0.1"),
]


@pytest.mark.parametrize(("name", "kw", "msg"), BAD)
def test_invalid_values_raise_like_torch(name, kw, msg):
    for backend in ("jax", "torch"):
        with pytest.raises(ValueError, match=msg):
            mo.get(name, backend=backend, **kw)
    with pytest.raises(ValueError):
        (_muon if name == "muon" else _adafactor)(**kw)


@pytest.mark.parametrize(("kw", "msg"), [
    ({"ns_steps": 100}, r"muon: ns_steps: expected an int < 100"),
    ({"ns_coefficients": (1.0, 2.0)}, r"muon: ns_coefficients: expected exactly 3 coefficients"),
])
def test_muon_values_torch_rejects_at_its_first_step_are_rejected_when_built(kw, msg):
    with pytest.raises(ValueError, match=msg):
        mo.get("muon", **kw)
    opt = _muon(**kw)  # torch builds it and raises at the step
    opt.param_groups[0]["params"][0].grad = torch.ones(3, 2)
    with pytest.raises(ValueError):
        opt.step()


def test_bad_types_name_the_argument():
    with pytest.raises(TypeError, match=r"muon: ns_steps: expected an int, got float 5.0"):
        mo.get("muon", ns_steps=5.0)
    with pytest.raises(TypeError, match=r"muon: nesterov: expected a bool"):
        mo.get("muon", nesterov=1)
    with pytest.raises(TypeError, match=r"adafactor: eps: expected a pair \(eps1, eps2\)"):
        mo.get("adafactor", eps=1e-3)


# ---------------------------------------------------------------------------------------------
# the gap where float32 sums round differently (larger matrices): measured, MULTILOSS_LONG


@pytest.mark.skipif(not LONG, reason="MULTILOSS_LONG=1: 100-step Muon gaps on larger matrices")
def test_muon_gap_on_larger_matrices():
    """Measured (docs/optim.md): "exact" sums part from torch by 1e-4..1e-3 on matrices whose
    float32 sums torch rounds differently; "torch_cpu" (torch's CPU kernels' orders, x86
    with AVX512-BF16) follows torch to 1e-14 on every shape."""
    rows = T.muon_gaps()
    for row in rows:
        assert row["float64"] < 5e-3, row
    if ATEN_X86 and ONEDNN_BF16:
        for row in rows:
            if row["ns_accumulation"] == "torch_cpu":
                assert row["float64"] < 1e-13, row
