"""The implementations a loss is timed with: multiloss on JAX and on torch, the native peers
(torch.nn.functional through the spec's reference, torch.compile of it, optax, Keras on its
JAX backend, where they have the loss) and the floors (one read of the inputs; one fresh write
of arrays of the gradient's size).

Each implementation is ``(fwd, fwd_bwd)``: callables without arguments that block until
their result is ready. JAX ones are jit-compiled with every input as an argument; forward +
backward is the value and the gradient with respect to every differentiable floating input
(torch: ``.backward()`` of the loss into ``.grad``)."""

from __future__ import annotations

import os

import numpy as np

ML_JAX, ML_TORCH = "multiloss-jax", "multiloss-torch"
ML_TORCH_COMPILED = "multiloss-torch compile=True"
TORCH_EAGER, TORCH_COMPILE = "torch F (eager)", "torch.compile(F)"
OPTAX, KERAS = "optax (jit)", "keras (jax, jit)"
READ_JAX, READ_TORCH = "floor: read (jax)", "floor: read (torch)"
WRITE_JAX, WRITE_TORCH = "floor: fresh write (jax)", "floor: fresh write (torch)"
JAX_NAIVE = "jax naive (optax on x @ W.T)"
TORCH_CHUNKED = "torch F chunked (LinearCrossEntropyOptions)"
JAX_CCE = "jax-cce (chunk_size=4096)"
#: linear_cross_entropy at a budget whose memory is at most torch's chunked op's
ML_JAX_SMALL = "multiloss-jax memory_budget=2MiB"
FLOORS = (READ_JAX, READ_TORCH, WRITE_JAX, WRITE_TORCH)

#: The peers a user may select with --peers (multiloss and the floors always run).
PEERS = ("eager", "compile", "optax", "keras", "naive", "chunked", "cce")


def diff_positions(spec, inputs):
    return [i for i, (inp, x) in enumerate(zip(spec.inputs, inputs))
            if inp.differentiable and np.issubdtype(np.asarray(x).dtype, np.floating)]


# ---------------------------------------------------------------------------------------------
# JAX


def _jax_pair(fn, jargs, pos):
    import jax

    fwd = jax.jit(fn)
    fb = jax.jit(jax.value_and_grad(fn, argnums=tuple(pos))) if pos else None
    return (lambda: jax.block_until_ready(fwd(*jargs)),
            None if fb is None else (lambda: jax.block_until_ready(fb(*jargs))),
            (fwd, fb))


def _optax_fn(name, opts):
    import jax.numpy as jnp
    import optax

    if name == "cross_entropy":
        return lambda x, t: optax.softmax_cross_entropy_with_integer_labels(x, t).mean()
    if name == "binary_cross_entropy_with_logits":
        return lambda x, t: optax.sigmoid_binary_cross_entropy(x, t).mean()
    if name == "mse":
        return lambda x, t: optax.squared_error(x, t).mean()
    if name == "huber":
        return lambda x, t: optax.huber_loss(x, t, delta=1.0).mean()
    if name == "kl_div":
        return lambda x, t: optax.kl_divergence(x, t).mean()  # batchmean
    if name == "triplet_margin":
        return lambda a, p, n: optax.triplet_margin_loss(a, p, n, margin=1.0, norm_degree=2,
                                                         eps=1e-6).mean()
    if name == "ctc":
        def ctc(lp, tg, il, tl):
            n_frames, width = lp.shape[0], tg.shape[1]
            pad_t = (jnp.arange(n_frames)[None] >= il[:, None]).astype(lp.dtype)
            pad_s = (jnp.arange(width)[None] >= tl[:, None]).astype(lp.dtype)
            per = optax.ctc_loss(jnp.transpose(lp, (1, 0, 2)), pad_t, tg, pad_s)
            return jnp.mean(per / jnp.maximum(tl, 1).astype(lp.dtype))

        return ctc
    return None


def _keras_fn(name):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax.numpy as jnp

    L = keras.losses
    table = {
        "cross_entropy": lambda x, t: jnp.mean(L.sparse_categorical_crossentropy(
            t, x, from_logits=True)),
        "binary_cross_entropy_with_logits": lambda x, t: jnp.mean(L.binary_crossentropy(
            t, x, from_logits=True)),
        "binary_cross_entropy": lambda x, t: jnp.mean(L.binary_crossentropy(t, x)),
        "mse": lambda x, t: jnp.mean(L.mean_squared_error(t, x)),
        "l1": lambda x, t: jnp.mean(L.mean_absolute_error(t, x)),
        "huber": lambda x, t: jnp.mean(L.huber(t, x, delta=1.0)),
        "kl_div": lambda x, t: jnp.mean(L.kl_divergence(t, jnp.exp(x))) * x.shape[-1],
    }
    return table.get(name)


# ---------------------------------------------------------------------------------------------
# torch


def _torch_pair(fn, tensors, pos):
    import torch

    leaves = [t.detach().clone().requires_grad_(True) if i in pos else t
              for i, t in enumerate(tensors)]

    def fwd():
        with torch.no_grad():
            fn(*tensors)

    def fb():
        for i in pos:
            leaves[i].grad = None
        fn(*leaves).backward()

    return fwd, (fb if pos else None)


def _reference_fn(spec, opts, torch):
    bound = spec.bind(opts)
    for o in spec.options:
        if o.kind == "array" and bound[o.name] is not None:
            bound[o.name] = torch.as_tensor(np.asarray(bound[o.name]))
    red = bound["reduction"]
    return lambda *a: spec.reference(torch, a, bound, red)


# ---------------------------------------------------------------------------------------------


def build(spec, inputs, opts, peers=PEERS, torch_only=False):
    """name -> (fwd, fwd_bwd or None, extra) for loss ``spec`` on NumPy ``inputs``;
    ``torch_only``: the torch implementations alone (a peak-memory run: no JAX array or
    compiled function in the process)."""
    import multiloss

    pos = diff_positions(spec, inputs)
    out = {}
    if not torch_only:
        import jax.numpy as jnp

        jargs = tuple(jnp.asarray(a) for a in inputs)
        ml = multiloss.get(spec.name, backend="jax", **opts)
        out[ML_JAX] = _jax_pair(lambda *a: ml(*a), jargs, pos)

    import torch

    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
    mt = multiloss.get(spec.name, backend="torch", **opts)
    out[ML_TORCH] = _torch_pair(mt, tensors, pos) + (None,)
    if spec.name == "cross_entropy" and "compile" in peers:
        mc = multiloss.get(spec.name, backend="torch", compile=True, **opts)
        out[ML_TORCH_COMPILED] = _torch_pair(mc, tensors, pos) + (None,)
    ref = _reference_fn(spec, opts, torch)
    if "eager" in peers:
        out[TORCH_EAGER] = _torch_pair(ref, tensors, pos) + (None,)
    if "compile" in peers:
        out[TORCH_COMPILE] = _torch_pair(torch.compile(ref), tensors, pos) + (None,)
    if torch_only:
        peers = tuple(p for p in peers if p not in ("optax", "keras", "naive", "cce"))
    if "optax" in peers:
        fn = _optax_fn(spec.name, opts)
        if fn is not None:
            out[OPTAX] = _jax_pair(fn, jargs, pos)
    if "keras" in peers:
        try:
            fn = _keras_fn(spec.name)
        except Exception:  # noqa: BLE001 - Keras absent or on another backend
            fn = None
        if fn is not None:
            out[KERAS] = _jax_pair(fn, jargs, pos)
    if spec.name == "linear_cross_entropy":
        if "memory_budget" not in opts and not torch_only:
            small = multiloss.get(spec.name, backend="jax", memory_budget=2 * 2**20, **opts)
            out[ML_JAX_SMALL] = _jax_pair(lambda *a: small(*a), jargs, pos)
        if "cce" in peers and opts.get("reduction", "mean") == "mean":
            try:
                from jax_cce import linear_cross_entropy as cce
            except ImportError:  # not installed: the peer is left out
                cce = None
            if cce is not None:
                out[JAX_CCE] = _jax_pair(lambda x, w, t: cce(x, w, t), jargs, pos)
        if "naive" in peers:
            import optax

            def naive(x, w, t):
                return optax.softmax_cross_entropy_with_integer_labels(x @ w.T, t).mean()

            out[JAX_NAIVE] = _jax_pair(naive, jargs, pos)
        if "chunked" in peers:
            import torch.nn.functional as F

            options = torch.nn.LinearCrossEntropyOptions()

            def chunked(x, w, t):
                return F.linear_cross_entropy(x, w, t, options=options)

            out[TORCH_CHUNKED] = _torch_pair(chunked, tensors, pos) + (None,)
    if not torch_only:
        out.update(floors(spec, inputs, pos))
    return out


def floors(spec, inputs, pos):
    """One read of every input; one fresh write of arrays of the gradients' shapes."""
    import jax
    import jax.numpy as jnp
    import torch

    jargs = tuple(jnp.asarray(a) for a in inputs)
    shapes = [np.shape(inputs[i]) for i in pos]

    @jax.jit
    def read(*a):
        return sum(jnp.sum(x.astype(jnp.float32)) for x in a)

    @jax.jit
    def write(*a):
        s = a[pos[0]].reshape(-1)[:1].sum() + 1 if pos else 1.0
        return tuple(jnp.broadcast_to(s, sh).astype(jnp.float32) for sh in shapes)

    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]

    def tread():
        return sum(float(t.sum()) for t in tensors)

    def twrite():
        return [torch.empty(sh, dtype=torch.float32).fill_(1.0) for sh in shapes]

    out = {READ_JAX: (lambda: jax.block_until_ready(read(*jargs)), None, None),
           READ_TORCH: (tread, None, None)}
    if shapes:
        out[WRITE_JAX] = (lambda: jax.block_until_ready(write(*jargs)), None, None)
        out[WRITE_TORCH] = (twrite, None, None)
    return out
