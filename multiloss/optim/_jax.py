"""The JAX implementations: optax transforms whose updates are torch.optim's.

One transform per optimizer instance, built by :func:`make` from a spec and bound
hyperparameters. Its state mirrors torch's: a per-parameter ``step`` and torch's per-parameter
buffers under torch's state names (``exp_avg``, ``momentum_buffer``, ...), each a pytree like
the parameters, plus the update count that drives the schedule.

Each update follows torch's single-tensor kernel (``torch/optim/<name>.py``,
``_single_tensor_<name>``) operation by operation, in the parameter's dtype, with the scalar
arithmetic torch does in Python doubles done in float64 under ``jax_enable_x64`` (float32
otherwise), so that float64 runs agree with torch to rounding. ``updates`` are
``new_param - param``; ``optax.apply_updates`` adds them back (one rounding, as any optax
update).

Parameters without a gradient are left alone as torch leaves a parameter whose ``.grad`` is
None: no decay, no moment update, no step count. Express it with a ``None`` leaf in the
gradient pytree (static: decided at trace time) or with ``has_grad=`` (a pytree of boolean
scalars like the parameters, traced: decided per step inside one compiled update).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._registry import OptimizerSpec
from ._registry import resolve as _resolve

__all__ = ["LBFGSState", "TorchOptState", "clip_grad_norm", "clip_grad_value", "make"]


class TorchOptState(NamedTuple):
    """count: updates so far (the schedule's step, torch's ``last_epoch``); step: torch's
    per-parameter ``state["step"]`` (a pytree of int32 like the parameters); buffers: torch's
    per-parameter state by name, each a pytree like the parameters; schedule: the state of a
    metric-driven schedule (ReduceLROnPlateau) or of a replayed ChainedScheduler or
    SequentialLR (the groups' lrs and cycled momenta, ``schedules.ChainState``), else ()."""

    count: Any
    step: Any
    buffers: dict
    schedule: Any


class LBFGSState(NamedTuple):
    """torch's LBFGS state (global, over the flattened parameters): d, t, the (s, y) history
    (``old_stps``, ``old_dirs``, ``ro``) as circular (history_size, n) arrays whose ``num_old``
    valid rows start at row ``head`` (oldest first), H_diag, prev_flat_grad, prev_loss and
    n_iter."""

    count: Any
    n_iter: Any
    d: Any
    t: Any
    old_dirs: Any
    old_stps: Any
    ro: Any
    num_old: Any
    head: Any
    H_diag: Any
    prev_flat_grad: Any
    prev_loss: Any
    schedule: Any


def _sdt():
    """The dtype of torch's Python-double scalar arithmetic."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _c(x, dt):
    return jnp.asarray(x, dt)


def _static(x) -> bool:
    return isinstance(x, (int, float))


def _lerp(start, end, weight, dt):
    """torch.lerp with a scalar weight: start + w (end - start) for |w| < 0.5, else
    end - (end - start) (1 - w)."""
    w = _c(weight, dt)
    small = start + w * (end - start)
    large = end - (end - start) * (1 - w)
    if _static(weight):
        return small if abs(weight) < 0.5 else large
    return jnp.where(jnp.abs(w) < 0.5, small, large)


def _select(flag, a, b):
    """``a if flag else b`` for a static bool or a traced one."""
    if isinstance(flag, bool):
        return a if flag else b
    return jnp.where(flag, a, b)


# --------------------------------------------------------------------------------------------
# per-parameter kernels: (g, p, buffers, t, h, dt) -> (new_p, new_buffers). t is this
# parameter's step count after this step (sdt float), h the group's hyperparameters with the
# scheduled lr (and momentum / beta1) as sdt scalars.


def _grad(g, p, h, dt, decoupled=False):
    """maximize and weight decay as torch applies them; returns (g, p after decoupled decay)."""
    if h["maximize"]:
        g = -g
    wd = h["weight_decay"]
    if wd != 0:
        if decoupled:
            p = p * _c(1 - h["lr"] * wd, dt)
        else:
            g = g + _c(wd, dt) * p
    return g, p


def _sgd(g, p, b, t, h, dt):
    g, p = _grad(g, p, h, dt)
    out = {}
    mom = h["momentum"]
    if "momentum_buffer" in b:
        buf = b["momentum_buffer"]
        new = buf * _c(mom, dt) + _c(1 - h["dampening"], dt) * g
        new = jnp.where(t == 1, g, new)  # torch: the first buffer is the gradient itself
        g_m = g + _c(mom, dt) * new if h["nesterov"] else new
        active = mom != 0  # a bool, or a traced one under a momentum-cycling schedule
        out["momentum_buffer"] = _select(active, new, buf)
        g = _select(active, g_m, g)
    return p + _c(-h["lr"], dt) * g, out


def _adam(g, p, b, t, h, dt, decoupled=None):
    decoupled = h.get("decoupled_weight_decay", True) if decoupled is None else decoupled
    g, p = _grad(g, p, h, dt, decoupled)
    b1, b2 = h["beta1"], h["beta2"]
    m = _lerp(b["exp_avg"], g, 1 - b1, dt)
    v = b["exp_avg_sq"] * _c(b2, dt) + (_c(1 - b2, dt) * g) * g
    out = {"exp_avg": m, "exp_avg_sq": v}
    bc1 = 1 - b1**t
    bc2 = 1 - b2**t
    step_size = h["lr"] / bc1
    bc2_sqrt = bc2**0.5
    if h["amsgrad"]:
        vmax = jnp.maximum(b["max_exp_avg_sq"], v)
        out["max_exp_avg_sq"] = vmax
        denom = jnp.sqrt(vmax) / _c(bc2_sqrt, dt) + _c(h["eps"], dt)
    else:
        if "max_exp_avg_sq" in b:
            out["max_exp_avg_sq"] = b["max_exp_avg_sq"]
        denom = jnp.sqrt(v) / _c(bc2_sqrt, dt) + _c(h["eps"], dt)
    return p + (_c(-step_size, dt) * m) / denom, out


def _adamw(g, p, b, t, h, dt):
    return _adam(g, p, b, t, h, dt, decoupled=True)


def _rmsprop(g, p, b, t, h, dt):
    g, p = _grad(g, p, h, dt)
    alpha = h["alpha"]
    sq = b["square_avg"] * _c(alpha, dt) + (_c(1 - alpha, dt) * g) * g
    out = {"square_avg": sq}
    if h["centered"]:
        ga = _lerp(b["grad_avg"], g, 1 - alpha, dt)
        out["grad_avg"] = ga
        avg = jnp.sqrt(sq + (_c(-1.0, dt) * ga) * ga)
    else:
        if "grad_avg" in b:
            out["grad_avg"] = b["grad_avg"]
        avg = jnp.sqrt(sq)
    avg = avg + _c(h["eps"], dt)
    lr = h["lr"]
    plain = p + (_c(-lr, dt) * g) / avg
    if "momentum_buffer" not in b:
        return plain, out
    mom = h["momentum"]
    buf = b["momentum_buffer"] * _c(mom, dt) + g / avg
    with_m = p + _c(-lr, dt) * buf
    active = mom > 0
    out["momentum_buffer"] = _select(active, buf, b["momentum_buffer"])
    return _select(active, with_m, plain), out


def _adagrad(g, p, b, t, h, dt):
    g, p = _grad(g, p, h, dt)
    clr = h["lr"] / (1 + (t - 1) * h["lr_decay"])
    s = b["sum"] + (_c(1.0, dt) * g) * g
    std = jnp.sqrt(s) + _c(h["eps"], dt)
    return p + (_c(-clr, dt) * g) / std, {"sum": s}


def _adadelta(g, p, b, t, h, dt):
    g, p = _grad(g, p, h, dt)
    rho, eps = h["rho"], _c(h["eps"], dt)
    sq = b["square_avg"] * _c(rho, dt) + (_c(1 - rho, dt) * g) * g
    std = jnp.sqrt(sq + eps)
    delta = jnp.sqrt(b["acc_delta"] + eps) / std * g
    acc = b["acc_delta"] * _c(rho, dt) + (_c(1 - rho, dt) * delta) * delta
    return p + _c(-h["lr"], dt) * delta, {"square_avg": sq, "acc_delta": acc}


def _adamax(g, p, b, t, h, dt):
    g, p = _grad(g, p, h, dt)
    b1, b2 = h["beta1"], h["beta2"]
    m = _lerp(b["exp_avg"], g, 1 - b1, dt)
    u = jnp.maximum(b["exp_inf"] * _c(b2, dt), jnp.abs(g) + _c(h["eps"], dt))
    clr = h["lr"] / (1 - b1**t)
    return p + (_c(-clr, dt) * m) / u, {"exp_avg": m, "exp_inf": u}


def _nadam(g, p, b, t, h, dt):
    g, p = _grad(g, p, h, dt, h["decoupled_weight_decay"])
    b1, b2, psi, lr = h["beta1"], h["beta2"], h["momentum_decay"], h["lr"]
    bc2 = 1 - b2**t
    mu = b1 * (1.0 - 0.5 * (0.96 ** (t * psi)))
    mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * psi)))
    mp_dt = b["mu_product"].dtype
    mp = b["mu_product"] * _c(mu, mp_dt)  # torch: a tensor of the default dtype
    mp_s = mp.astype(_sdt())
    mp_next = mp_s * mu_next
    m = _lerp(b["exp_avg"], g, 1 - b1, dt)
    v = b["exp_avg_sq"] * _c(b2, dt) + (_c(1 - b2, dt) * g) * g
    denom = jnp.sqrt(v / _c(bc2, dt)) + _c(h["eps"], dt)
    p = p + (_c(-lr * (1.0 - mu) / (1.0 - mp_s), dt) * g) / denom
    p = p + (_c((-lr * mu_next) / (1.0 - mp_next), dt) * m) / denom
    return p, {"exp_avg": m, "exp_avg_sq": v, "mu_product": mp}


def _radam(g, p, b, t, h, dt):
    g, p = _grad(g, p, h, dt, h["decoupled_weight_decay"])
    b1, b2, lr = h["beta1"], h["beta2"], h["lr"]
    m = _lerp(b["exp_avg"], g, 1 - b1, dt)
    v = b["exp_avg_sq"] * _c(b2, dt) + (_c(1 - b2, dt) * g) * g
    bc1 = 1 - b1**t
    bc2 = 1 - b2**t
    corrected = m / _c(bc1, dt)
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * (b2**t) / bc2
    rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
    adaptive = _c(bc2**0.5, dt) / (jnp.sqrt(v) + _c(h["eps"], dt))
    rectified = p + _c(-1.0, dt) * (corrected * _c(lr, dt) * adaptive * _c(rect, dt))
    plain = p + _c(-1.0, dt) * (corrected * _c(lr, dt))
    return jnp.where(rho_t > 5.0, rectified, plain), {"exp_avg": m, "exp_avg_sq": v}


# ---- Muon and Adafactor (issue 18)


def _bf16(x):
    """Round a float32 array to bfloat16 (round to nearest even), keeping float32: where torch
    stores a bfloat16 result. ``reduce_precision`` survives XLA's fusion (a float32 ->
    bfloat16 -> float32 convert pair may be elided under jit: xla_allow_excess_precision)."""
    return jax.lax.reduce_precision(x, exponent_bits=8, mantissa_bits=7)


def _bf16_dot(a, b):
    """torch's CPU bfloat16 matmul: exact products, float32 sums (here summed in float64 under
    x64, then rounded to float32: the correctly rounded sum, which torch's float32 sum equals
    unless its order rounds differently)."""
    acc = _sdt()
    return jnp.matmul(a.astype(acc), b.astype(acc),
                      precision=jax.lax.Precision.HIGHEST).astype(jnp.float32)


def _bf16_dot_torch_cpu(a, b, a_view=False):
    """torch's CPU bfloat16 matmul as oneDNN computes it on AVX512-BF16 machines (measured on
    torch 2.13 / oneDNN 3.12; torch calls oneDNN when m k n > 16^3, ``_torch_cpu_mm``):
    float32 sums over blocks of k, each sequential in pairs (k + 1, k) (vdpbf16ps) from 0,
    the blocks' sums then added in order. Blocks of 512, or of 1024 when k > 1024 and ``a``
    is contiguous (``a_view``: torch's ``a`` is a transposed view). Sequential: slow for
    large k, an option for bit parity with such a torch run."""
    k = a.shape[1]
    kb = 1024 if k > 1024 and not a_view else 512
    total = None
    for s in range(0, k, kb):
        e = min(k, s + kb)
        order = [j for i in range(s, e, 2) for j in ((i + 1, i) if i + 1 < e else (i,))]
        idx = jnp.asarray(order, jnp.int32)
        part, _ = jax.lax.scan(lambda acc, xy: (acc + xy[0][:, None] * xy[1][None, :], None),
                               jnp.zeros((a.shape[0], b.shape[1]), jnp.float32),
                               (a[:, idx].T, b[idx, :]))
        total = part if total is None else total + part
    return jnp.zeros((a.shape[0], b.shape[1]), jnp.float32) if total is None else total


#: aten sends a bfloat16 CPU matmul to oneDNN only when m * k * n exceeds 16 ** 3
#: (``mkldnn_gemm_min_size``); smaller ones run aten's own kernels (BlasKernel.cpp), whose
#: summation order depends on which operands are transposed views
_ONEDNN_MIN_MKN = 16 * 16 * 16


def _seq_sum(chunks, init):
    """``init + chunks[0] + chunks[1] + ...`` in float32, one rounding per addition, in that
    order (a scan: XLA neither reorders nor fuses it)."""
    if chunks.shape[0] == 0:
        return init
    return jax.lax.scan(lambda acc, c: (acc + c, None), init, chunks)[0]


def _lane_tree(v):
    """Sum of the last axis (8 lanes) as torch's AVX2 ``vec_reduce_all``: lanes i + 4, then
    i + 2, then i + 1."""
    while v.shape[-1] > 1:
        h = v.shape[-1] // 2
        v = v[..., :h] + v[..., h:]
    return v[..., 0]


def _dot_ilp4(prods):
    """aten's ``sum`` (BlasKernel.cpp, both operands contiguous): four partial sums over
    k = 0, 4, 8, ... / 1, 5, ... / ..., the leftover k added to the first, then
    ((s0 + s1) + s2) + s3."""
    k = prods.shape[-1]
    k4 = k - k % 4
    blocks = jnp.moveaxis(prods[..., :k4].reshape(*prods.shape[:-1], k4 // 4, 4), -2, 0)
    s = _seq_sum(blocks, jnp.zeros((*prods.shape[:-1], 4), jnp.float32))
    s0 = s[..., 0]
    for j in range(k4, k):
        s0 = s0 + prods[..., j]
    return ((s0 + s[..., 1]) + s[..., 2]) + s[..., 3]


def _dot_avx2(prods):
    """aten's bfloat16 dot product with float32 arithmetic (``dot_with_fp32_arith``, the
    AVX2 build torch dispatches to; A @ B.T with B a transposed view): blocks of 64 into 8
    registers of 8 lanes, the registers summed as a tree (r + 4, r + 2, r + 1), then the
    lanes (``_lane_tree``); blocks of 16 after them into one register of 8 lanes (low half,
    then high half), its lane tree added; the last k % 16 products added one by one."""
    lead, k = prods.shape[:-1], prods.shape[-1]
    la = k - k % 64
    regs = _seq_sum(jnp.moveaxis(prods[..., :la].reshape(*lead, la // 64, 8, 8), -3, 0),
                    jnp.zeros((*lead, 8, 8), jnp.float32))
    while regs.shape[-2] > 1:
        h = regs.shape[-2] // 2
        regs = regs[..., :h, :] + regs[..., h:, :]
    red = _lane_tree(regs[..., 0, :])
    lv = la + (k - la) // 16 * 16
    tail = _seq_sum(jnp.moveaxis(prods[..., la:lv].reshape(*lead, (lv - la) // 8, 8), -2, 0),
                    jnp.zeros((*lead, 8), jnp.float32))
    red = red + _lane_tree(tail)
    for j in range(lv, k):
        red = red + prods[..., j]
    return red


def _dot_sequential(prods):
    """aten's reduced-precision ``gemm_transb_`` (A a transposed view, B contiguous, beta 0,
    alpha 1): a float32 accumulator per output, the products added for k = 0, 1, 2, ..."""
    return _seq_sum(jnp.moveaxis(prods, -1, 0), jnp.zeros(prods.shape[:-1], jnp.float32))


def _torch_cpu_mm(a, b, a_view=False, b_view=False):
    """The float32 sums of torch 2.13's CPU ``a @ b`` of bfloat16 ``a`` (m, k), ``b`` (k, n)
    before the rounding to bfloat16, in torch's order (measured on an AVX512-BF16 CPU, one
    thread): oneDNN's (``_bf16_dot_torch_cpu``) when m k n > 16^3, else aten's kernel
    for the operands' layout. ``a_view`` / ``b_view``: torch's operand is a transposed view
    of a contiguous tensor (``x.T``)."""
    m, k = a.shape
    n = b.shape[1]
    if m * k * n > _ONEDNN_MIN_MKN:
        return _bf16_dot_torch_cpu(a, b, a_view)
    prods = a[:, None, :] * b.T[None, :, :]  # exact: bfloat16 x bfloat16 fits in float32
    if a_view and not b_view:
        return _dot_sequential(prods)
    if b_view and not a_view:
        return _dot_avx2(prods)
    return _dot_ilp4(prods)


def _addmm_sum(beta, m, alpha, acc):
    """torch's CPU bfloat16 ``addmm(M, A, B, beta=beta, alpha=alpha)`` before its rounding to
    bfloat16, given the float32 sums ``acc`` of A @ B: fma(beta, M, alpha * acc) in float32
    (oneDNN's sum post-op and aten's kernels alike; measured), the fused multiply-add
    emulated in float64 (exact: a float32 times a bfloat16 fits in 53 bits) under x64.
    ``alpha`` None: 1."""
    scaled = acc if alpha is None else alpha * acc
    if _sdt() == jnp.float64:
        return (beta.astype(jnp.float64) * m.astype(jnp.float64)
                + scaled.astype(jnp.float64)).astype(jnp.float32)
    return beta * m + scaled


def _newton_schulz(u, coefficients, steps, eps, accumulation="exact"):
    """torch.optim._muon._zeropower_via_newtonschulz with torch's bfloat16 rounding: its
    bfloat16 ops compute in float32 and round once to bfloat16 (addmm: beta * C + alpha *
    (A @ B) in float32, one rounding), a float64 input reaches bfloat16 through float32.
    ``accumulation``: "exact" (each float32 sum correctly rounded; any summation order that
    is exact agrees) or "torch_cpu" (torch 2.13's CPU order, ``_torch_cpu_mm``: which
    kernel runs, and so the order, depends on the sizes and, at the first step of a tall
    matrix, on torch's transposed views)."""
    f32 = jnp.float32
    a, b, c = (_c(v, f32) for v in coefficients)
    x = _bf16(u.astype(f32))
    tall = u.shape[0] > u.shape[1]
    if tall:
        x = x.T
    norm = _bf16(jnp.sqrt(jnp.sum(jnp.square(x.astype(_sdt())))).astype(f32))
    norm = jnp.maximum(norm, _bf16(_c(eps, f32)))  # clamp(min=eps) on a bfloat16 tensor
    x = _bf16(x / norm)

    def step(x, x_view=False):
        """One iteration; ``x_view``: torch's X is the transposed view of the tall input
        (its first iteration), which changes aten's kernels for X @ X.T and U @ X."""
        if accumulation == "torch_cpu":
            gram = _bf16(_torch_cpu_mm(x, x.T, a_view=x_view, b_view=not x_view))
            upd = _bf16(_addmm_sum(b, gram, c, _torch_cpu_mm(gram, gram)))
            return _bf16(_addmm_sum(a, x, None, _torch_cpu_mm(upd, x, b_view=x_view)))
        gram = _bf16(_bf16_dot(x, x.T))
        upd = _bf16(_addmm_sum(b, gram, c, _bf16_dot(gram, gram)))
        return _bf16(_addmm_sum(a, x, None, _bf16_dot(upd, x)))

    first = 0
    if tall and accumulation == "torch_cpu" and steps > 0:
        x, first = step(x, x_view=True), 1
    x = jax.lax.fori_loop(first, steps, lambda _, x: step(x), x)
    return x.T if tall else x


def _muon(g, p, b, t, h, dt):
    mom = h["momentum"]
    buf = _lerp(b["momentum_buffer"], g, 1 - mom, dt)
    u = _lerp(g, buf, mom, dt) if h["nesterov"] else buf
    o = _newton_schulz(u, h["ns_coefficients"], h["ns_steps"], h["eps"],
                       h.get("ns_accumulation", "exact"))
    A, B = p.shape[:2]
    fn = h["adjust_lr_fn"]
    ratio = 0.2 * math.sqrt(max(A, B)) if fn == "match_rms_adamw" else math.sqrt(max(1, A / B))
    lr = h["lr"]
    p = p * _c(1 - lr * h["weight_decay"], dt)
    return p + _c(-(lr * ratio), dt) * o.astype(dt), {"momentum_buffer": buf}


def _py_min(a, b):
    """Python's min(a, b): b only if b < a (NaN b: a)."""
    return jnp.where(b < a, b, a)


def _py_max(a, b):
    """Python's max(a, b): b only if b > a (NaN b: a)."""
    return jnp.where(b > a, b, a)


def _adafactor(g, p, b, t, h, dt):
    if h["maximize"]:
        g = -g
    sdt = _sdt()
    eps1, eps2 = h["eps"]
    if eps1 is None:
        eps1 = float(jnp.finfo(dt).eps)
    w = t ** h["beta2_decay"]  # 1 - beta2_t, a Python double in torch
    lr = h["lr"]
    rho = _py_min(_c(lr, sdt), 1 / t**0.5)
    n = math.prod(p.shape)
    rms_p = jnp.sqrt(jnp.sum(p * p)).astype(sdt) / n**0.5
    alpha = _py_max(_c(eps2, sdt), rms_p) * rho
    wd = h["weight_decay"]
    if wd != 0:
        p = p * _c(1 - lr * wd, dt)
    out = {}
    if g.ndim > 1:
        row = jnp.square(jnp.sqrt(jnp.sum(g * g, axis=-1, keepdims=True))) / _c(g.shape[-1], dt)
        col = jnp.square(jnp.sqrt(jnp.sum(g * g, axis=-2, keepdims=True))) / _c(g.shape[-2], dt)
        r = _lerp(b["row_var"], row, w, dt)
        cv = _lerp(b["col_var"], col, w, dt)
        out = {"row_var": r, "col_var": cv}
        var = (r * cv) / jnp.maximum(jnp.mean(r, axis=-2, keepdims=True), _c(eps1, dt))
    else:
        var = _lerp(b["variance"], g * g, w, dt)
        out = {"variance": var}
    upd = (_c(1.0, dt) / jnp.sqrt(jnp.maximum(var, _c(eps1 * eps1, dt)))) * g
    rms_u = jnp.sqrt(jnp.sum(upd * upd)).astype(sdt) / (n**0.5 * h["d"])
    denom = _py_max(_c(1.0, sdt), rms_u)
    return p + (-alpha / denom).astype(dt) * upd, out


def _slot_shape(name: str, key: str, shape: tuple) -> tuple:
    """The shape of buffer ``key`` of a parameter of ``shape`` stepped by optimizer ``name``
    (torch's state shapes); ``(0,)``: the parameter has no such buffer (a placeholder, e.g.
    Adafactor's ``variance`` of a matrix, or another optimizer's buffer in a parameter group
    of a mixed transform)."""
    if name == "adafactor":
        if len(shape) > 1:
            return {"row_var": (*shape[:-1], 1), "col_var": (*shape[:-2], 1, shape[-1])}.get(
                key, (0,))
        return tuple(shape) if key == "variance" else (0,)
    return tuple(shape)


def _check_muon_rank(name, leaves, gi, gspecs, treedef):
    for i, p in enumerate(leaves):
        if gspecs[gi[i]].name == "muon" and jnp.ndim(p) != 2:
            path = _paths(jax.tree_util.tree_unflatten(treedef, [0] * treedef.num_leaves))[i]
            raise ValueError(
                f"{name}: params{path}: torch.optim.Muon only supports 2-D parameters, got "
                f"shape {tuple(jnp.shape(p))}; step the others with another optimizer in a "
                "parameter group of its own, e.g. param_groups={'muon': {}, 'adamw': "
                "{'optimizer': 'adamw'}}, labels=multiloss.optim.muon_labels")


KERNELS = {
    "sgd": _sgd, "adam": _adam, "adamw": _adamw, "rmsprop": _rmsprop, "adagrad": _adagrad,
    "adadelta": _adadelta, "adamax": _adamax, "nadam": _nadam, "radam": _radam,
    "muon": _muon, "adafactor": _adafactor,
}


# ---- ASGD, Rprop, SparseAdam (issue 18)


def _first_lr(t, stored, lr, dt):
    """torch fills a state entry with the group's lr when a parameter's state is created (its
    first step, t == 1) and uses the stored value afterwards."""
    return jnp.where(t == 1, jnp.asarray(lr, _sdt()).astype(dt), stored)


def _asgd(g, p, b, t, h, dt):
    """torch's _single_tensor_asgd (capturable=False): eta and mu are 0-dim tensors of torch's
    scalar dtype, read as Python floats (``.item()``) and rewritten from Python doubles."""
    g, _ = _grad(g, p, h, dt)
    sdt = _sdt()
    edt = b["eta"].dtype
    lr, lambd, alpha, t0 = h["lr"], h["lambd"], h["alpha"], h["t0"]
    eta = _first_lr(t, b["eta"], lr, edt).astype(sdt)
    p = p * _c(1 - lambd * eta, dt)
    p = p + _c(-eta, dt) * g
    mu = b["mu"]
    ax = jnp.where(mu == 1, p, b["ax"] + (p - b["ax"]) * mu.astype(dt))
    lr = jnp.asarray(lr, sdt)
    new_eta = lr / ((1 + lambd * lr * t) ** alpha)
    d = t - t0
    new_mu = 1 / jnp.where(d > 1, d, jnp.ones_like(d))  # Python's max(1, d): 1 unless d > 1
    return p, {"eta": new_eta.astype(edt), "mu": new_mu.astype(edt), "ax": ax}


def _torch_sign(x):
    """torch.sign on CPU: (x > 0) - (x < 0), so NaN -> 0 (jnp.sign(NaN) is NaN)."""
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


def _rprop(g, p, b, t, h, dt):
    """torch's _single_tensor_rprop (capturable=False), with torch's sign (NaN -> 0: a NaN
    gradient entry keeps its step size and does not move the parameter; torch's CUDA sign
    may differ)."""
    if h["maximize"]:
        g = -g
    etaminus, etaplus = (_c(e, dt) for e in h["etas"])
    lo, hi = (_c(v, dt) for v in h["step_sizes"])
    step_size = _first_lr(t, b["step_size"], h["lr"], dt)
    s = _torch_sign(g * b["prev"])
    f = jnp.where(s > 0, etaplus, jnp.where(s < 0, etaminus, _c(1, dt)))
    step_size = jnp.minimum(jnp.maximum(step_size * f, lo), hi)  # torch.clamp_(lo, hi)
    g = jnp.where(f == etaminus, jnp.zeros_like(g), g)
    return p + _c(-1, dt) * _torch_sign(g) * step_size, {"prev": g, "step_size": step_size}


def _sparse_adam(g, p, b, t, h, dt):
    """torch.optim._functional.sparse_adam on the entries of the gradient that are not 0 (the
    dense counterpart of the indices of torch's coalesced sparse gradient); the others keep
    their parameter and moments."""
    if h["maximize"]:
        g = -g
    b1, b2 = h["beta1"], h["beta2"]
    present = g != 0
    m0, v0 = b["exp_avg"], b["exp_avg_sq"]
    dm = (g - m0) * _c(1 - b1, dt)
    dv = (g * g - v0) * _c(1 - b2, dt)
    m = m0 + dm
    v = v0 + dv
    denom = jnp.sqrt(dv + v0) + _c(h["eps"], dt)
    step_size = h["lr"] * jnp.sqrt(1 - b2**t) / (1 - b1**t)  # torch: math.sqrt
    new_p = p + (dm + m0) / denom * _c(-step_size, dt)
    return (jnp.where(present, new_p, p),
            {"exp_avg": jnp.where(present, m, m0), "exp_avg_sq": jnp.where(present, v, v0)})


KERNELS.update({"asgd": _asgd, "rprop": _rprop, "sparse_adam": _sparse_adam})
#: per-parameter state entries that are 0-dim (not shaped like the parameter)
_SCALAR_BUFFERS = ("mu_product", "eta", "mu")


def _buffers_needed(spec: OptimizerSpec, groups: list[dict], cycles: bool) -> list[str]:
    need = []
    for key in spec.buffers:
        if key == "max_exp_avg_sq" and not any(g["amsgrad"] for g in groups):
            continue
        if key == "grad_avg" and not any(g["centered"] for g in groups):
            continue
        if key == "momentum_buffer" and not (cycles or any(g["momentum"] != 0 for g in groups)):
            continue
        need.append(key)
    return need


def _delta(new_p, p):
    """The update ``u`` with ``p + u == new_p`` where torch's in-place step gives ``new_p``:
    ``new_p - p``, except 0 where the parameter did not change, so that an infinite parameter
    that stays infinite (torch: ``-inf - lr * g == -inf``) does not become ``-inf - -inf = NaN``
    in the update. Bitwise the same as ``new_p - p`` for finite values (x - x is +0)."""
    return jnp.where(new_p == p, jnp.zeros_like(p), new_p - p)


# --------------------------------------------------------------------------------------------
# gradient clipping, torch.nn.utils semantics


def _vector_norm(x, p):
    if p == math.inf:
        return jnp.max(jnp.abs(x)) if x.size else jnp.zeros((), x.dtype)
    if p == 2:
        return jnp.sqrt(jnp.sum(x * x))
    if p == 1:
        return jnp.sum(jnp.abs(x))
    return jnp.sum(jnp.abs(x) ** p) ** (1.0 / p)


def _clip(grads: list, masks: list, clip) -> list:
    """Clip the present gradients (``None``: no gradient; a False mask: none this step) as
    torch's clip_grad_norm_ / clip_grad_value_ on the parameters that have a ``.grad``."""
    if clip is None:
        return grads
    kind = clip[0]
    if kind == "value":
        v = clip[1]
        return [None if g is None else jnp.clip(g, _c(-v, g.dtype), _c(v, g.dtype)) for g in grads]
    max_norm, p = clip[1], clip[2]
    present = [(i, g) for i, g in enumerate(grads) if g is not None]
    if not present:
        return grads
    norms = []
    for i, g in present:
        n = _vector_norm(g, p)
        if masks[i] is not None:
            n = jnp.where(masks[i], n, jnp.zeros((), n.dtype))
        norms.append(n)
    dt = jnp.result_type(*norms)
    total = _vector_norm(jnp.stack([n.astype(dt) for n in norms]), p)
    coef = _c(max_norm, dt) / (total + _c(1e-6, dt))
    coef = jnp.minimum(coef, _c(1.0, dt))
    out = list(grads)
    for i, g in present:
        out[i] = g * coef.astype(g.dtype)
    return out


def _clip_spec(clip_grad_norm, norm_type, clip_grad_value):
    if clip_grad_norm is not None:
        return ("norm", float(clip_grad_norm), float(norm_type))
    if clip_grad_value is not None:
        return ("value", float(clip_grad_value))
    return None


def _paths(tree, none_leaves=True) -> list[str]:
    flat, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=(lambda x: x is None) if none_leaves else None)
    return [jax.tree_util.keystr(p) for p, _ in flat]


def _array_like(x) -> bool:
    return hasattr(x, "shape") or isinstance(x, (int, float, bool, complex))


def _flat(treedef, tree, name, like=None, shape="same", who=""):
    """``tree``'s leaves in the order of the parameters' ``treedef`` (``None`` leaves kept).
    A clear ValueError naming the argument and the leaf's path where the structure differs
    from the parameters' or, given the parameter leaves ``like``, where a leaf's shape is not
    the parameter's (``shape="same"``) or not a scalar (``shape="scalar"``)."""
    if tree is None:
        return [None] * treedef.num_leaves
    try:
        flat = treedef.flatten_up_to(tree)
    except (ValueError, TypeError):
        flat = None
    ref_paths = None
    if flat is not None and any(x is not None and not _array_like(x) for x in flat):
        flat = None  # a subtree where the parameters have a leaf
    if flat is None:
        ref_paths = _paths(jax.tree_util.tree_unflatten(treedef, [0] * treedef.num_leaves))
        got = _paths(tree)
        missing = [p for p in ref_paths if p not in got]
        extra = [p for p in got if p not in ref_paths]
        what = []
        if missing:
            what.append("missing " + ", ".join(f"{name}{p}" for p in missing[:5])
                        + (" ..." if len(missing) > 5 else ""))
        if extra:
            what.append("unexpected " + ", ".join(f"{name}{p}" for p in extra[:5])
                        + (" ..." if len(extra) > 5 else ""))
        detail = "; ".join(what) if what else (
            f"the containers differ: expected {treedef}, got "
            f"{jax.tree_util.tree_structure(tree)}")
        raise ValueError(f"{who}{name}: expected a pytree with the parameters' structure; "
                         f"{detail}") from None
    if like is not None:
        paths = None
        for i, (x, p) in enumerate(zip(flat, like)):
            if x is None:
                continue
            xs, ps = jnp.shape(x), jnp.shape(p)
            if (shape == "same" and xs != ps) or (shape == "scalar" and xs != ()):
                if paths is None:
                    paths = _paths(jax.tree_util.tree_unflatten(treedef,
                                                                [0] * treedef.num_leaves))
                want = (f"shape {ps} (the parameter's)" if shape == "same" else
                        "a boolean scalar (whether the parameter has a gradient this step)")
                raise ValueError(f"{who}{name}{paths[i]}: expected {want}, got shape {xs}")
    return flat


def _check_state(spec, state, treedef, leaves, fields, shapes=None):
    """The state was built by ``init`` for parameters of this structure and these shapes."""
    for field_name, tree in fields:
        try:
            flat = treedef.flatten_up_to(tree)
        except (ValueError, TypeError):
            raise ValueError(
                f"{spec.name}: state.{field_name}: built by tx.init for parameters of another "
                f"structure ({jax.tree_util.tree_structure(tree)}; the parameters: {treedef}): "
                "call tx.init(params) for these parameters") from None
        if field_name == "step" or any(field_name == f"buffers[{k!r}]"
                                       for k in _SCALAR_BUFFERS):
            continue
        want = (shapes or {}).get(field_name) or [jnp.shape(p) for p in leaves]
        for i, (x, p) in enumerate(zip(flat, leaves)):
            if jnp.shape(x) != tuple(want[i]):
                path = _paths(jax.tree_util.tree_unflatten(treedef,
                                                           [0] * treedef.num_leaves))[i]
                expect = ("" if tuple(want[i]) == jnp.shape(p)
                          else f" (its buffer's shape is {tuple(want[i])})")
                raise ValueError(
                    f"{spec.name}: state.{field_name}{path}: shape {jnp.shape(x)} was built by "
                    f"tx.init for another parameter; params{path} has shape {jnp.shape(p)}"
                    f"{expect}: call tx.init(params) for these parameters")


def _standalone_clip(clip):
    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, *, has_grad=None, **extra):
        del params, extra
        leaves, treedef = jax.tree_util.tree_flatten(updates, is_leaf=lambda x: x is None)
        masks = _flat(treedef, has_grad, "has_grad", leaves, shape="scalar")
        out = _clip(leaves, masks, clip)
        return jax.tree_util.tree_unflatten(treedef, out), state

    tx = TorchTransform(init, update)
    tx._recipe = ("clip", clip)
    return tx


def clip_grad_norm(max_norm: float, norm_type: float = 2.0):
    """torch.nn.utils.clip_grad_norm_ as an optax transform (see multiloss.optim)."""
    return _standalone_clip(("norm", float(max_norm), float(norm_type)))


def clip_grad_value(clip_value: float):
    """torch.nn.utils.clip_grad_value_ as an optax transform (see multiloss.optim)."""
    return _standalone_clip(("value", float(clip_value)))


# --------------------------------------------------------------------------------------------
# the transform


class TorchTransform(optax.GradientTransformationExtraArgs):
    """An optax.GradientTransformationExtraArgs carrying what built it: ``spec``,
    ``param_groups`` (each group's bound hyperparameters), ``labels``, ``schedule``,
    ``clip``. It pickles as the recipe that built it (``get``'s arguments, from_torch's
    state snapshot), rebuilt on loading: its ``init`` / ``update`` are closures. A callable
    ``labels`` or a LambdaLR's function must then be picklable themselves (module-level)."""

    def __reduce__(self):
        recipe = self.__dict__.get("_recipe")
        if recipe is None:
            raise TypeError("this multiloss.optim transform does not know how it was built; "
                            "only transforms made by multiloss.optim pickle")
        from . import _rebuild

        return (_rebuild, (recipe,))


def _check_real(spec, leaves):
    for p in leaves:
        if not jnp.issubdtype(jnp.result_type(p), jnp.floating):
            raise TypeError(
                f"{spec.name}: params: expected real floating-point arrays, got "
                f"{jnp.result_type(p)} of shape {jnp.shape(p)} (torch steps complex parameters "
                "as (real, imag) pairs: pass them as two real leaves)")


def _group_index(labels, params, treedef, keys: list) -> list[int]:
    n = treedef.num_leaves
    if labels is None:
        if len(keys) != 1:
            raise ValueError(f"labels: {len(keys)} parameter groups need labels (a pytree like "
                             "the parameters, or a function of them, naming each leaf's group)")
        return [0] * n
    if callable(labels):
        labels = labels(params)
    try:
        flat = treedef.flatten_up_to(labels)
    except (ValueError, TypeError):
        if isinstance(labels, (list, tuple)) and len(labels) == n:
            flat = list(labels)
        else:
            raise ValueError(
                f"labels: expected a pytree with the parameters' structure ({treedef}) or a "
                f"list of {n} labels in leaf order, got {labels!r}") from None
    index = {k: i for i, k in enumerate(keys)}
    out = []
    for lab in flat:
        try:
            out.append(index[lab])
        except (KeyError, TypeError):
            raise ValueError(f"labels: unknown parameter group {lab!r}; groups are "
                             f"{keys}") from None
    return out


def make(spec: OptimizerSpec, groups: list[dict], keys: list, labels=None, schedule=None,
         clip=None) -> TorchTransform:
    """The optax transform of ``spec`` for bound per-group hyperparameters ``groups`` (full
    dicts), group labels ``keys``, leaf ``labels``, a schedule and a clip spec."""
    if spec.name == "lbfgs":
        return _make_lbfgs(spec, groups, keys, labels, schedule, clip)
    # a group may name another optimizer ({"optimizer": "adamw", ...}: Muon's recipe)
    gspecs = [_resolve(g["optimizer"]) if "optimizer" in g else spec for g in groups]
    cycles = schedule is not None and schedule.cycles_momentum
    bound = schedule.bind([g["lr"] for g in groups]) if schedule is not None else None
    own = {}  # optimizer name -> the buffers its groups need
    for s_ in dict.fromkeys(gspecs):
        own[s_.name] = _buffers_needed(s_, [g for g, gs in zip(groups, gspecs) if gs is s_],
                                       cycles)
    needed = list(dict.fromkeys(k for ks in own.values() for k in ks))

    def hyper(g, lrs, moms):
        h = dict(groups[g])
        h["lr"] = lrs[g]
        if "betas" in h:
            h["beta1"], h["beta2"] = h["betas"]
        if moms is not None:
            h["beta1" if gspecs[g].momentum_key == "betas" else "momentum"] = moms[g]
        return h

    def slot(i, key, p, gi):
        """Buffer ``key``'s shape for leaf ``i`` (``(0,)``: a placeholder, not its buffer)."""
        name = gspecs[gi[i]].name
        if key not in own[name]:
            return (0,)
        return _slot_shape(name, key, tuple(jnp.shape(p)))

    def init(params):
        leaves, treedef = jax.tree_util.tree_flatten(params)
        _check_real(spec, leaves)
        gi = _group_index(labels, params, treedef, keys)
        _check_muon_rank(spec.name, leaves, gi, gspecs, treedef)
        buffers = {}
        for key in needed:
            if key == "mu_product":
                vals = [jnp.ones((), groups[gi[i]]["mu_product_dtype"])
                        if key in own[gspecs[gi[i]].name] else jnp.zeros((0,), jnp.float32)
                        for i in range(len(leaves))]
            elif key in ("eta", "mu"):  # ASGD: 0-dim, torch's scalar dtype (eta set at t=1)
                vals = [(jnp.ones if key == "mu" else jnp.zeros)((), groups[gi[i]]["scalar_dtype"])
                        if key in own[gspecs[gi[i]].name] else jnp.zeros((0,), jnp.float32)
                        for i in range(len(leaves))]
            elif key == "sum":
                vals = [jnp.full(slot(i, key, p, gi),
                                 groups[gi[i]].get("initial_accumulator_value", 0.0),
                                 jnp.result_type(p)) for i, p in enumerate(leaves)]
            else:
                vals = [jnp.zeros(slot(i, key, p, gi), jnp.result_type(p))
                        for i, p in enumerate(leaves)]
            buffers[key] = jax.tree_util.tree_unflatten(treedef, vals)
        steps = jax.tree_util.tree_unflatten(treedef, [jnp.zeros((), jnp.int32) for _ in leaves])
        sched = bound.init(_sdt()) if bound is not None else ()
        return TorchOptState(jnp.zeros((), jnp.int32), steps, buffers, sched)

    def update(updates, state, params=None, *, has_grad=None, metrics=None, **extra):
        del extra
        if params is None:
            raise ValueError(f"{spec.name}: params: the update needs the parameters (as "
                             "torch's step reads them), got None")
        leaves, treedef = jax.tree_util.tree_flatten(params)
        who = f"{spec.name}: "
        grads = _flat(treedef, updates, "updates", leaves, who=who)
        masks = _flat(treedef, has_grad, "has_grad", leaves, shape="scalar", who=who)
        gi = _group_index(labels, params, treedef, keys)
        _check_muon_rank(spec.name, leaves, gi, gspecs, treedef)
        _check_state(spec, state, treedef, leaves,
                     [("step", state.step)]
                     + [(f"buffers[{k!r}]", v) for k, v in state.buffers.items()],
                     shapes={f"buffers[{k!r}]": [slot(i, k, p, gi) for i, p in enumerate(leaves)]
                             for k in state.buffers if k in needed})
        grads = _clip(grads, masks, clip)
        sdt = _sdt()
        t_sched = state.count.astype(sdt)
        if bound is not None:
            lrs = bound.lrs(state.schedule, t_sched)
            moms = bound.momenta(state.schedule, t_sched)
        else:
            lrs = [_c(g["lr"], sdt) for g in groups]
            moms = None
        hs = [hyper(g, lrs, moms) for g in range(len(groups))]
        steps = treedef.flatten_up_to(state.step)
        bufs = {k: treedef.flatten_up_to(v) for k, v in state.buffers.items()}
        deltas, new_steps = [], []
        new_bufs = {k: [] for k in bufs}
        for i, (g, p) in enumerate(zip(grads, leaves)):
            old = {k: bufs[k][i] for k in bufs}
            mine = own[gspecs[gi[i]].name]
            if g is None:
                deltas.append(jnp.zeros_like(p))
                new_steps.append(steps[i])
                for k in bufs:
                    new_bufs[k].append(old[k])
                continue
            dt = jnp.result_type(p)
            g = jnp.asarray(g, dt)
            step = steps[i] + 1
            new_p, out = KERNELS[gspecs[gi[i]].name](
                g, p, {k: v for k, v in old.items() if k in mine}, step.astype(sdt), hs[gi[i]],
                dt)
            delta = _delta(new_p, p)
            m = masks[i]
            if m is not None:
                delta = jnp.where(m, delta, jnp.zeros_like(delta))
                step = jnp.where(m, step, steps[i])
                out = {k: jnp.where(m, v, old[k]) for k, v in out.items()}
            deltas.append(delta)
            new_steps.append(step)
            for k in bufs:
                new_bufs[k].append(out.get(k, old[k]))
        sched_state = state.schedule
        if bound is not None:  # ReduceLROnPlateau with metrics; a replayed schedule
            sched_state = bound.advance(sched_state, state.count.astype(sdt), metrics)
        new_state = TorchOptState(
            state.count + 1,
            jax.tree_util.tree_unflatten(treedef, new_steps),
            {k: jax.tree_util.tree_unflatten(treedef, v) for k, v in new_bufs.items()},
            sched_state,
        )
        return jax.tree_util.tree_unflatten(treedef, deltas), new_state

    return TorchTransform(init, update)


# --------------------------------------------------------------------------------------------
# LBFGS


def _make_lbfgs(spec, groups, keys, labels, schedule, clip):
    if len(groups) != 1:
        raise ValueError("lbfgs: param_groups: LBFGS doesn't support per-parameter options "
                         f"(parameter groups), got {len(groups)} groups (as torch)")
    h = groups[0]
    if h["line_search_fn"] is not None:
        raise ValueError(f"lbfgs: line_search_fn: expected None on the jax backend (torch's "
                         f"fixed-step mode), got {h['line_search_fn']!r}; strong_wolfe is "
                         "not implemented")
    if schedule is not None and schedule.cycles_momentum:
        raise ValueError("schedule: LBFGS has no momentum or beta1 to cycle; pass "
                         "cycle_momentum=False (torch raises the same)")
    bound = schedule.bind([h["lr"]]) if schedule is not None else None
    H = h["history_size"]
    max_iter, max_eval = h["max_iter"], h["max_eval"]
    tol_grad, tol_change = h["tolerance_grad"], h["tolerance_change"]

    def flat_of(tree_leaves, like):
        return jnp.concatenate([
            jnp.zeros(jnp.size(p), jnp.result_type(p)) if g is None else jnp.ravel(g).astype(jnp.result_type(p))
            for g, p in zip(tree_leaves, like)]) if like else jnp.zeros((0,), _sdt())

    def init(params):
        leaves = jax.tree_util.tree_leaves(params)
        _check_real(spec, leaves)
        dt = jnp.result_type(*leaves) if leaves else _sdt()
        n = sum(int(jnp.size(p)) for p in leaves)
        z = jnp.zeros((n,), dt)
        sched = bound.init(_sdt()) if bound is not None else ()
        return LBFGSState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), z, jnp.zeros((), dt),
                          jnp.zeros((H, n), dt), jnp.zeros((H, n), dt), jnp.zeros((H,), dt),
                          jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), jnp.ones((), dt), z,
                          jnp.zeros((), _sdt()), sched)

    def update(updates, state, params=None, *, has_grad=None, metrics=None, value=None,
               value_and_grad_fn=None, **extra):
        del extra
        if params is None:
            raise ValueError("lbfgs: params: the update needs the parameters, got None")
        leaves, treedef = jax.tree_util.tree_flatten(params)
        grads = _flat(treedef, updates, "updates", leaves, who="lbfgs: ")
        masks = _flat(treedef, has_grad, "has_grad", leaves, shape="scalar", who="lbfgs: ")
        n = sum(int(jnp.size(p)) for p in leaves)
        if state.d.shape != (n,):
            raise ValueError(
                f"lbfgs: state: built by tx.init for parameters of {state.d.shape[0]} elements "
                f"in all, these have {n}: call tx.init(params) for these parameters")
        if n == 0:
            # no parameters (or only empty ones): nothing to step, as an empty tree is for
            # every other optimizer here (torch refuses an empty parameter list when built)
            return (jax.tree_util.tree_unflatten(treedef, [jnp.zeros_like(p) for p in leaves]),
                    state._replace(count=state.count + 1))
        grads = _clip(grads, masks, clip)
        grads = [None if g is None else (g if m is None else jnp.where(m, g, jnp.zeros_like(g)))
                 for g, m in zip(grads, masks)]
        dt = state.d.dtype
        sdt = _sdt()
        if bound is not None:
            lr = bound.lrs(state.schedule, state.count.astype(sdt))[0]
        else:
            lr = _c(h["lr"], sdt)
        x0 = flat_of(leaves, leaves)
        sizes = [int(jnp.size(p)) for p in leaves]

        def unflat(x):
            out, o = [], 0
            for p, s in zip(leaves, sizes):
                out.append(x[o:o + s].reshape(jnp.shape(p)))
                o += s
            return jax.tree_util.tree_unflatten(treedef, out)

        if max_iter > 1 and value_and_grad_fn is None:
            raise ValueError("lbfgs: value_and_grad_fn: max_iter > 1 re-evaluates the objective; "
                             "pass value_and_grad_fn=f (f(params) -> (loss, grads)) to update, "
                             "or use max_iter=1")

        def evaluate(x):
            loss, g = value_and_grad_fn(unflat(x))
            return jnp.asarray(loss, sdt), flat_of(_flat(treedef, g, "value_and_grad_fn's "
                                                          "grads", leaves, who="lbfgs: "), leaves)

        flat_grad = flat_of(grads, leaves)
        # torch returns at once when max|g| <= tolerance_grad: nothing changes
        converged = jnp.max(jnp.abs(flat_grad)) <= tol_grad if flat_grad.size else jnp.array(True)
        skip = converged if max_iter == 1 else jnp.array(False)  # the while loop skips itself
        if value is not None:
            loss0 = jnp.asarray(value, sdt)
        elif max_iter > 1:
            loss0 = evaluate(x0)[0]
        else:
            loss0 = jnp.zeros((), sdt)

        def body(c):
            (x, g, loss, d, t, S, Y, ro, num_old, head, Hd, prev_g, prev_loss, n_state, n_local,
             evals, done) = c
            n_local = n_local + 1
            n_state = n_state + jnp.where(skip, 0, 1)
            first = (n_state == 1) & ~skip
            # memory update (torch: y = g - g_prev, s = d t; push if y.s > 1e-10)
            y = g - prev_g
            s = d * t
            ys = jnp.dot(y, s)
            push = ~first & ~skip & (ys > 1e-10)
            # circular history: logical entry j (0 = oldest) is row (head + j) % H
            full = num_old == H
            at = jnp.where(full, head, (head + num_old) % H)
            write = lambda A, v: jax.lax.dynamic_update_index_in_dim(  # noqa: E731
                A, jnp.where(push, v, jax.lax.dynamic_index_in_dim(A, at, 0, False)), at, 0)
            S = write(S, s)
            Y = write(Y, y)
            ro = write(ro, 1.0 / ys)
            Hd = jnp.where(push, ys / jnp.dot(y, y), Hd)
            head = jnp.where(push & full, (head + 1) % H, head)
            num_old = jnp.where(push, jnp.minimum(num_old + 1, H), num_old)
            # first iteration ever: d = -g, empty memory, H_diag = 1
            num_old = jnp.where(first, 0, num_old)
            head = jnp.where(first, 0, head)
            Hd = jnp.where(first, jnp.ones_like(Hd), Hd)

            # torch's two-loop recursion over the num_old stored pairs (a traced trip count)
            def back(j, qa):
                q, al = qa
                i = num_old - 1 - j
                k = (head + i) % H
                a = jnp.dot(S[k], q) * ro[k]
                return q + (-a) * Y[k], jax.lax.dynamic_update_index_in_dim(al, a, i, 0)

            q, al = jax.lax.fori_loop(0, num_old, back, (-g, jnp.zeros((H,), dt)))
            r = q * Hd

            def fwd(i, r):
                k = (head + i) % H
                be = jnp.dot(Y[k], r) * ro[k]
                return r + (al[i] - be) * S[k]

            r = jax.lax.fori_loop(0, num_old, fwd, r)
            d = jnp.where(first, -g, r)
            prev_g = g
            prev_loss = loss
            # torch: Python's min(1.0, 1 / |g|_1), i.e. 1.0 unless 1 / |g|_1 < 1 (NaN: 1.0)
            inv = 1.0 / jnp.sum(jnp.abs(g))
            t_first = jnp.where(inv < 1.0, inv, _c(1.0, dt)) * lr.astype(dt)
            t = jnp.where(first, t_first, lr.astype(dt))
            gtd = jnp.dot(g, d)
            stop = gtd > -tol_change
            x = jnp.where(stop, x, x + t * d)
            if max_iter > 1:
                def reeval(_):
                    return evaluate(x)

                again = (~stop) & (n_local != max_iter)
                loss_n, g_n = jax.lax.cond(again, reeval, lambda _: (loss, g), None)
                loss, g = loss_n, g_n
                evals = evals + jnp.where(again, 1, 0)
                opt_cond = jnp.where(again, jnp.max(jnp.abs(g)) <= tol_grad, False)
            else:
                opt_cond = False
            done = (stop | (n_local == max_iter) | (evals >= max_eval) | opt_cond
                    | (jnp.max(jnp.abs(d * t)) <= tol_change)
                    | (jnp.abs(loss - prev_loss) < tol_change))
            return (x, g, loss, d, t, S, Y, ro, num_old, head, Hd, prev_g, prev_loss, n_state,
                    n_local, evals, done)

        c0 = (x0, flat_grad, loss0, state.d, state.t, state.old_stps, state.old_dirs, state.ro,
              state.num_old, state.head, state.H_diag, state.prev_flat_grad, state.prev_loss,
              state.n_iter,
              jnp.zeros((), jnp.int32), jnp.ones((), jnp.int32), converged)
        if max_iter == 1:
            c = body(c0)
        else:
            c = jax.lax.while_loop(lambda c: ~c[-1] & (c[14] < max_iter), body, c0)
        (x, _, _, d, t, S, Y, ro, num_old, head, Hd, prev_g, prev_loss, n_state, _, _, _) = c
        if max_iter == 1:
            step = jnp.where(jnp.dot(flat_grad, d) > -tol_change, jnp.zeros_like(d), t * d)
        else:
            step = x - x0
        step = jnp.where(converged, jnp.zeros_like(step), step)
        keep = lambda new, old: jnp.where(converged, old, new)  # noqa: E731
        sched_state = state.schedule
        if bound is not None:  # ReduceLROnPlateau with metrics; a replayed schedule
            sched_state = bound.advance(sched_state, state.count.astype(sdt), metrics)
        new_state = LBFGSState(
            state.count + 1, keep(n_state, state.n_iter), keep(d, state.d), keep(t, state.t),
            Y, S, ro, num_old, head, keep(Hd, state.H_diag), keep(prev_g, state.prev_flat_grad),
            keep(prev_loss, state.prev_loss), sched_state)
        out, o = [], 0
        for p, s in zip(leaves, sizes):
            out.append(step[o:o + s].reshape(jnp.shape(p)).astype(jnp.result_type(p)))
            o += s
        return jax.tree_util.tree_unflatten(treedef, out), new_state

    return TorchTransform(init, update)


# --------------------------------------------------------------------------------------------
# from_torch: a torch optimizer's state as the transform's initial state


def _torch_leaf_index(snap, params, treedef) -> list[int]:
    """For each JAX parameter leaf, the index of its torch parameter in the snapshot
    (``optimizer.param_groups`` order): by name when torch's names are known (the JAX
    parameters a flat dict keyed by them), else by position."""
    n_torch = len(snap["shapes"])
    names = snap["names"]
    if names is not None and None not in names:
        index = {name: j for j, name in enumerate(names)}
        try:
            flat = treedef.flatten_up_to(index)
        except (ValueError, TypeError):
            raise ValueError(
                f"params: from_torch's state is keyed by torch's parameter names "
                f"{sorted(index)}; expected a flat dict with exactly those keys, got "
                f"{treedef}") from None
        return list(flat)
    if treedef.num_leaves != n_torch:
        raise ValueError(f"params: expected {n_torch} parameter leaves in the order of the torch "
                         f"optimizer's param_groups, got {treedef.num_leaves}")
    return list(range(n_torch))


def with_torch_state(tx, snap):
    """``tx`` whose ``init(params)`` returns the torch optimizer's state as read in ``snap``
    (``_torch.read_state``), so that the JAX run continues torch's trajectory: per-parameter
    step counts and buffers (LBFGS: its history), the schedule's step count and
    ReduceLROnPlateau's counters. A parameter torch holds no state for starts fresh."""
    base_init = tx.init

    # a fresh optimizer (no step taken: Adagrad's constructor state aside) holds nothing per
    # parameter to move: its parameters need not be matched to the JAX leaves (a Flax tree's
    # order is not torch's module order)
    per_param = snap["lbfgs"] is not None or any(
        st and ("momentum_buffer" in st or float(st.get("step", 0)) > 0)
        for st in snap["params"])

    def init(params):
        state = base_init(params)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        if not per_param:
            idx = []
        else:
            idx = _torch_leaf_index(snap, params, treedef)
        paths = _paths(params, none_leaves=False)
        for i, j in enumerate(idx):
            want = snap["shapes"][j]
            if tuple(jnp.shape(leaves[i])) != want:
                name = snap["names"][j] if snap["names"] else f"#{j}"
                raise ValueError(f"params{paths[i]}: expected shape {want} (torch parameter "
                                 f"{name}), got {jnp.shape(leaves[i])}")
        sdt = _sdt()
        count = jnp.asarray(snap["count"], jnp.int32)
        sched = state.schedule
        if snap["plateau"] is not None:
            pl = snap["plateau"]
            from .schedules import PlateauState

            sched = PlateauState(jnp.asarray(pl["lrs"], sdt), jnp.asarray(pl["best"], sdt),
                                 jnp.asarray(pl["num_bad_epochs"], jnp.int32),
                                 jnp.asarray(pl["cooldown_counter"], jnp.int32),
                                 jnp.asarray(pl["last_epoch"], jnp.int32))
        from .schedules import ChainState

        if snap.get("lrs") is not None and isinstance(sched, ChainState):  # a replay
            moms = sched.momenta  # the groups' lrs (and cycled momenta) now
            if moms.shape[0]:
                moms = jnp.asarray(snap["momenta"], sdt)
            sched = ChainState(jnp.asarray(snap["lrs"], sdt), moms)
        if isinstance(state, LBFGSState):
            return _lbfgs_from_torch(state, snap, leaves, idx)._replace(count=count,
                                                                        schedule=sched)
        steps = treedef.flatten_up_to(state.step)
        bufs = {k: treedef.flatten_up_to(v) for k, v in state.buffers.items()}
        for i, j in enumerate(idx):
            st = snap["params"][j]
            if not st:
                continue
            if "step" in st:
                steps[i] = jnp.asarray(int(float(st["step"])), jnp.int32)
            elif "momentum_buffer" in st:  # torch's SGD counts no steps; one was taken
                steps[i] = jnp.ones((), jnp.int32)
            for k in bufs:
                if k in st:
                    bufs[k][i] = jnp.asarray(st[k], bufs[k][i].dtype)
        return TorchOptState(count, jax.tree_util.tree_unflatten(treedef, steps),
                             {k: jax.tree_util.tree_unflatten(treedef, v)
                              for k, v in bufs.items()}, sched)

    out = TorchTransform(init, tx.update)
    out.__dict__.update(getattr(tx, "__dict__", {}))
    out._recipe = ("from_torch", tx.__dict__.get("_recipe"), snap)
    return out


def _lbfgs_from_torch(state, snap, leaves, idx):
    st = snap["lbfgs"]
    if st is None:
        return state
    # torch flattens the parameters in param_groups order, the JAX state in leaf order
    sizes = [math.prod(s) for s in snap["shapes"]]
    offs = [sum(sizes[:j]) for j in range(len(sizes))]
    perm = jnp.asarray([k for j in idx for k in range(offs[j], offs[j] + sizes[j])], jnp.int32)
    dt = state.d.dtype

    def vec(x):
        return jnp.asarray(x, dt)[perm] if perm.size else jnp.zeros((0,), dt)

    k = len(st["old_dirs"])
    dirs, stps, ro = state.old_dirs, state.old_stps, state.ro
    for r in range(k):
        dirs = dirs.at[r].set(vec(st["old_dirs"][r]))
        stps = stps.at[r].set(vec(st["old_stps"][r]))
        ro = ro.at[r].set(jnp.asarray(st["ro"][r], dt))
    return state._replace(
        n_iter=jnp.asarray(st["n_iter"], jnp.int32), d=vec(st["d"]), t=jnp.asarray(st["t"], dt),
        old_dirs=dirs, old_stps=stps, ro=ro, num_old=jnp.asarray(k, jnp.int32),
        head=jnp.zeros((), jnp.int32), H_diag=jnp.asarray(st["H_diag"], dt),
        prev_flat_grad=vec(st["prev_flat_grad"]),
        prev_loss=jnp.asarray(st["prev_loss"], state.prev_loss.dtype))
