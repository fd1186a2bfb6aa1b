"""Segmentation losses with segmentation_models_pytorch's semantics: dice, jaccard, tversky
(focal-Tversky with gamma != 1) and lovasz (Berman et al. 2018). Specs only; implementations in
``_jax.py`` and ``_torch.py``; the reference is smp's own loss classes
(``segmentation_models_pytorch.losses``, loaded by path: see ``smp_losses``).

Measured on segmentation_models_pytorch 0.6.0 with torch 2.13.0 (float64,
``torch.autograd.grad``):

- dice, jaccard and tversky are not per-sample averages: the soft counts are summed over the
  whole batch and every pixel, per class (``dims=(0, 2)``), the score is computed per class,
  and the loss is the mean over the classes (``classes`` selects and may repeat classes,
  ``class_weights`` makes it ``sum(w l) / sum(w)``; smp casts the class weights to float32);
  a class with no foreground pixel in the whole batch has loss 0 but still counts in the
  mean (smp's ``mask``); an image without foreground only adds its false positives;
- the intersection is ``(sum p + sum t - sum |p - t|) / 2`` (``soft_tversky_score``): for
  targets in {0, 1} the usual ``sum p t``, and |p - t|'s gradient is 0 where p == t exactly
  (a saturated logit on its target);
- tversky's gamma is applied after the class mean: ``(mean_c l_c) ** gamma``;
- lovasz: the binary (and multilabel) loss is the Lovasz hinge over the logits (all channels of
  an image flattened together), the multiclass loss the Lovasz-softmax over the softmax, averaged
  over the classes present; ``per_image`` averages the per-image losses; ``from_logits`` is
  ignored by smp;
- smp sorts the errors with ``torch.sort`` (not stable): for more than 16 elements torch's order
  of tied errors is arbitrary, and so is the (sub)gradient at ties. multiloss sorts stably (ties
  keep the pixel order), the order torch's sort gives for 16 elements or fewer.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np

from ..._registry import InputSpec, LossSpec, Option, Sample, boolean, real, register
from .._common import REDUCTIONS, case_id, expect_float, grid

FAMILY = "segmentation"

#: The reference library's version the semantics were read from and measured on.
SMP_VERSION = "0.6.0"

MODES = ("binary", "multiclass", "multilabel")

_STUB = "_multiloss_smp"


def smp_losses():
    """``segmentation_models_pytorch.losses``, without smp's package ``__init__`` (which imports
    torchvision and timm): a stub parent package whose ``__path__`` is the installed smp
    directory, under a private name, so that only the self-contained ``losses`` subpackage (it
    needs torch alone) is imported. Works with ``pip install --no-deps
    segmentation-models-pytorch``."""
    loaded = sys.modules.get("segmentation_models_pytorch.losses")
    if loaded is not None:
        return loaded
    full = f"{_STUB}.losses"
    if full in sys.modules:
        return sys.modules[full]
    spec = importlib.util.find_spec("segmentation_models_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the segmentation references need segmentation_models_pytorch: pip install "
            f"--no-deps segmentation-models-pytorch=={SMP_VERSION}",
            name="segmentation_models_pytorch",
        )
    stub = types.ModuleType(_STUB)
    stub.__path__ = list(spec.submodule_search_locations)
    stub.__package__ = _STUB
    sys.modules[_STUB] = stub
    return importlib.import_module(full)


# ---------------------------------------------------------------------------------------------
# options


def _mode(name, value):
    if value not in MODES:
        raise ValueError(f"{name}: expected one of {list(MODES)}, got {value!r}")
    return value


def _classes(name, value):
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value]
    try:
        items = list(value)
    except TypeError:
        raise TypeError(
            f"{name}: expected None or a list of class indices, got {type(value).__name__} "
            f"{value!r}"
        ) from None
    if not items or not all(
        isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in items
    ):
        raise TypeError(f"{name}: expected None or a non-empty list of ints, got {value!r}")
    if any(c < 0 for c in items):
        raise ValueError(f"{name}: expected class indices >= 0, got {value!r}")
    return tuple(int(c) for c in items)


def _optional_int(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise TypeError(f"{name}: expected None or a number, got {type(value).__name__} "
                        f"{value!r}")
    if isinstance(value, (float, np.floating)):
        if not float(value).is_integer():
            raise ValueError(f"{name}: expected an integer label value, got {value!r}")
    return int(value)


def _class_weights(name, value):
    shape = tuple(getattr(value, "shape", np.shape(value)))
    try:
        arr = value if hasattr(value, "dtype") else np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a 1-D array of class weights, got "
                        f"{type(value).__name__}") from None
    if len(shape) != 1:
        raise ValueError(f"{name}: expected a 1-D array (one weight per class), got shape "
                         f"{shape}")
    return arr


MODE = Option("mode", "multiclass",
              "'binary' (input (N, 1, *) or (N, *), target of the input's shape or without its "
              "channel axis), 'multiclass' (input (N, C, *) logits, target (N, *) class "
              "indices), 'multilabel' (input and target (N, C, *)). smp requires it; "
              "multiloss defaults to 'multiclass'", _mode,
              allowed="'binary' | 'multiclass' | 'multilabel'")
CLASSES = Option("classes", None,
                 "the classes whose losses are averaged (None: every channel), as smp: "
                 "repeated indices count twice; not with mode='binary'", _classes,
                 allowed="None | list of int in [0, C)")
LOG_LOSS = Option("log_loss", False, "-log(clamp_min(score, eps)) instead of 1 - score",
                  boolean)
FROM_LOGITS = Option("from_logits", True,
                     "the input is logits: softmax over the class axis (multiclass) or sigmoid "
                     "(computed as exp(log_softmax), exp(logsigmoid), as smp); False: "
                     "probabilities", boolean)
SMOOTH = Option("smooth", 0.0, "added to the numerator and the denominator of the score",
                real(0.0))
IGNORE = Option("ignore_index", None,
                "target value whose pixels do not count (their prediction and target are "
                "zeroed, as smp)", _optional_int, allowed="None | int")
EPS = Option("eps", 1e-7, "the score's denominator (and log_loss's score) is clamped to at "
             "least eps", real(0.0))
CLASS_WEIGHTS = Option("class_weights", None,
                       "one weight per class (C,) (smp 0.6's class_weights): the mean over "
                       "classes becomes sum(w l) / sum(w); not with mode='binary'",
                       _class_weights, kind="array")


def _overlap_warn(opts):
    """Cross-option checks (smp asserts them at construction)."""
    if opts["mode"] == "binary":
        if opts["classes"] is not None:
            raise ValueError(f"classes: not supported with mode='binary' (smp asserts it), got "
                             f"{list(opts['classes'])}")
        if opts.get("class_weights") is not None:
            raise ValueError("class_weights: not supported with mode='binary' (smp raises)")


def _lovasz_warn(opts):
    if not opts["from_logits"]:
        raise ValueError(
            "from_logits: smp's LovaszLoss ignores it (the binary loss is a hinge on logits, "
            "the multiclass loss always applies softmax); multiloss accepts only True, got False"
        )


# ---------------------------------------------------------------------------------------------
# checks


def _check_target(named, opts):
    """(input, target) shapes and dtypes of a mode; returns the number of classes C."""
    x, t = named["input"], named["target"]
    expect_float("input", x)
    mode = opts["mode"]
    if x.ndim < 2:
        want = "(N, 1, *) or (N, *)" if mode == "binary" else "(N, C, *)"
        raise ValueError(f"input: expected shape {want} with at least 2 axes, got shape "
                         f"{x.shape}")
    if mode == "multiclass":
        if t.kind not in "iu":
            raise TypeError(f"target: expected an integer array of class indices for "
                            f"mode='multiclass', got {t.describe()}")
        want = x.shape[:1] + x.shape[2:]
        if t.shape != want:
            raise ValueError(f"target: expected shape {want} (input's shape without the class "
                             f"axis) for mode='multiclass', got shape {t.shape}")
        if x.shape[1] == 0:
            raise ValueError(f"input: expected at least one class, got shape {x.shape}")
        return x.shape[1]
    if t.kind not in "fiub":
        raise TypeError(f"target: expected a real-valued mask, got {t.describe()}")
    if t.shape != x.shape:
        alt = x.shape[:1] + x.shape[2:]
        if not (mode == "binary" and x.shape[1] == 1 and t.shape == alt):
            also = f" or {alt}" if mode == "binary" and x.shape[1] == 1 else ""
            raise ValueError(f"target: expected shape {x.shape}{also} for mode={mode!r}, got "
                             f"shape {t.shape}")
    return 1 if mode == "binary" else x.shape[1]


def _selected(opts, n_classes):
    """The classes whose losses are kept (smp's ``loss[classes]``)."""
    classes = opts["classes"]
    if classes is None:
        return tuple(range(n_classes))
    bad = [c for c in classes if c >= n_classes]
    if bad:
        raise ValueError(f"classes: expected class indices in [0, {n_classes}), got {bad[0]}")
    return classes


def _overlap_scalar(opts) -> bool:
    """Whether the unreduced loss is one number: tversky with gamma != 1 (the power applies
    to the class mean)."""
    return opts.get("gamma", 1.0) != 1.0


def _overlap_check(named, opts):
    c = _check_target(named, opts)
    selected = _selected(opts, c)
    w = opts.get("class_weights")
    if w is not None and tuple(w.shape) != (c,):
        raise ValueError(f"class_weights: expected one weight per class, shape ({c},), got "
                         f"shape {tuple(w.shape)}")
    return () if _overlap_scalar(opts) else (len(selected),)


def _lovasz_check(named, opts):
    _check_target(named, opts)
    return named["input"].shape[:1] if opts["per_image"] else ()


def _check_indices(values, infos, opts):
    """multiclass class indices in [0, C) or equal to ignore_index (concrete values only)."""
    t = values.get("target")
    if t is None or opts["mode"] != "multiclass" or t.size == 0:
        return
    c = infos["input"].shape[1]
    bad = (t < 0) | (t >= c)
    if opts["ignore_index"] is not None:
        bad &= t != opts["ignore_index"]
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        also = (f" or equal ignore_index={opts['ignore_index']}"
                if opts["ignore_index"] is not None else "")
        raise ValueError(f"target: expected class indices in [0, {c}){also}, got {t[bad][0]} "
                         f"at index {pos}")


# ---------------------------------------------------------------------------------------------
# normalizers


def _overlap_normalizer(inputs, opts):
    x = np.asarray(inputs[0])
    c = 1 if opts["mode"] == "binary" else x.shape[1]
    sel = _selected(opts, c)
    if _overlap_scalar(opts):
        return np.ones(()), np.ones(())
    w = opts.get("class_weights")
    d = np.ones(len(sel)) if w is None else np.asarray(w, np.float64)[list(sel)]
    return d, np.ones(len(sel))


def _lovasz_normalizer(inputs, opts):
    shape = np.shape(inputs[0])[:1] if opts["per_image"] else ()
    return np.ones(shape), np.ones(shape)


# ---------------------------------------------------------------------------------------------
# sample data


def _logits(rng, shape, dtype, scale=2.0):
    return (rng.normal(size=shape) * scale).astype(dtype)


def _data(rng, dtype, mode, n=2, c=3, spatial=(3, 4), from_logits=True, ignore=None,
          channel=True, p_ignore=0.2):
    """(input, target) of a mode; every class present somewhere in the batch."""
    if mode == "binary":
        shape = (n, 1) + spatial if channel else (n,) + spatial
        x = _logits(rng, shape, dtype)
        t = (rng.random(shape) < 0.4).astype(dtype)
        if t.size:
            t.flat[0] = 1.0
        target_shape = (n,) + spatial if channel and rng.random() < 0.5 else shape
        t = t.reshape(target_shape)
    elif mode == "multiclass":
        shape = (n, c) + spatial
        x = _logits(rng, shape, dtype)
        t = rng.integers(0, c, size=(n,) + spatial)
        if t.size >= c:
            t.flat[:c] = np.arange(c)
        t = t.astype(np.int64)
    else:
        shape = (n, c) + spatial
        x = _logits(rng, shape, dtype)
        t = (rng.random(shape) < 0.4).astype(dtype)
    if ignore is not None and t.size:
        m = rng.random(t.shape) < p_ignore
        m.flat[-1] = True
        t = np.where(m, ignore, t).astype(t.dtype)
    if not from_logits:
        if mode == "multiclass":
            e = np.exp(x.astype(np.float64))
            x = (e / e.sum(axis=1, keepdims=True)).astype(dtype)
        else:
            x = (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(dtype)
    return x, t


def _weights(rng, shape, dtype):
    """Sample weights with a 0, exactly representable."""
    w = rng.choice([0.0, 0.5, 1.0, 1.5, 2.0], size=shape).astype(dtype)
    if w.size > 1:
        w.flat[1] = 1.25
    return w


def _loss_shape(spec_check, inputs, opts):
    from ..._registry import array_info

    named = {"input": array_info(np.asarray(inputs[0])),
             "target": array_info(np.asarray(inputs[1]))}
    return spec_check(named, opts)


def _full(name, opts):
    base = {"mode": "multiclass", "classes": None, "gamma": 1.0, "per_image": False,
            "class_weights": None}
    if name != "tversky":
        base.pop("gamma")
    return {**base, **opts}


def _overlap_samples(name, extra_grid=()):
    def samples(rng, dtype):
        def sw_for(inputs, opts):
            shape = _loss_shape(_overlap_check, inputs, _full(name, opts))
            return _weights(rng, shape, dtype)

        for g in grid(mode=MODES, reduction=REDUCTIONS):
            opts = dict(g)
            inputs = _data(rng, dtype, g["mode"])
            sw = sw_for(inputs, opts) if g["reduction"] in ("mean", "none") else None
            yield Sample(case_id(f"{name}", {**opts, "sw": sw is not None}), inputs, opts, sw)
        for mode in MODES:
            opts = {"mode": mode, "log_loss": True, "smooth": 1.0}
            yield Sample(case_id(name, opts), _data(rng, dtype, mode), opts)
            opts = {"mode": mode, "from_logits": False, "reduction": "none"}
            x, t = _data(rng, dtype, mode, from_logits=False)
            # probabilities exactly 0 and 1, on and off their targets
            x.reshape(-1)[:4] = np.array([0.0, 1.0, 0.0, 1.0], dtype)
            yield Sample(case_id(f"{name}[probabilities-0-1]", opts), (x, t), opts)
            ig = 255 if mode == "multiclass" else -1
            opts = {"mode": mode, "ignore_index": ig}
            yield Sample(case_id(name, opts), _data(rng, dtype, mode, ignore=ig), opts)
        # classes (repeated) and class weights (float32-exact: smp rounds them to float32)
        for mode in ("multiclass", "multilabel"):
            opts = {"mode": mode, "classes": (2, 0, 2)}
            yield Sample(case_id(name, opts), _data(rng, dtype, mode), opts)
            opts = {"mode": mode, "classes": (0, 2),
                    "class_weights": np.array([0.5, 2.0, 1.25], dtype)}
            x, t = _data(rng, dtype, mode)
            yield Sample(case_id(name, {**opts, "reduction": "mean"}), (x, t), opts)
            opts2 = {**opts, "reduction": "none"}
            yield Sample(case_id(name, opts2), (x, t), opts2)
        # logits of +-1e4: saturated probabilities, exactly on and off their targets
        for mode in MODES:
            x, t = _data(rng, dtype, mode)
            x = np.where(rng.random(x.shape) < 0.5, 1e4, -1e4).astype(dtype)
            opts = {"mode": mode, "reduction": "none"}
            yield Sample(case_id(f"{name}[logits+-1e4]", opts), (x, t), opts)
        # empty masks: a class absent from the whole batch (loss 0 as smp's mask), an image
        # without foreground, no foreground at all
        x, t = _data(rng, dtype, "multiclass", c=4)
        t = np.where(t == 3, 1, t)
        opts = {"mode": "multiclass", "reduction": "none"}
        yield Sample(case_id(f"{name}[empty-class]", opts), (x, t), opts)
        x, t = _data(rng, dtype, "binary", channel=True)
        t = np.array(t)
        t[0] = 0
        t.reshape(-1)[-1] = 1
        yield Sample(f"{name}[empty-image,mode=binary]", (x, t), {"mode": "binary"})
        x, t = _data(rng, dtype, "multilabel")
        t = np.zeros_like(t)
        opts = {"mode": "multilabel", "smooth": 0.5}
        yield Sample(case_id(f"{name}[empty-masks]", opts), (x, t), opts)
        # nothing counts: every sample weight 0
        x, t = _data(rng, dtype, "multiclass")
        for emp in ("nan", "zero"):
            opts = {"empty_reduction": emp}
            yield Sample(f"{name}[zero-sample-weights,empty={emp}]", (x, t), opts,
                         np.zeros(_loss_shape(_overlap_check, (x, t), _full(name, opts)),
                                  dtype))
        yield from extra_grid(rng, dtype) if callable(extra_grid) else ()

    return samples


def _tversky_extra(rng, dtype):
    for mode, alpha, beta in (("binary", 0.3, 0.7), ("multiclass", 0.9, 0.1)):
        opts = {"mode": mode, "alpha": alpha, "beta": beta, "reduction": "none"}
        yield Sample(case_id("tversky", opts), _data(rng, dtype, mode), opts)
    for mode, gamma in (("binary", 0.75), ("multiclass", 2.0), ("multilabel", 2.0)):
        opts = {"mode": mode, "gamma": gamma, "alpha": 0.3, "beta": 0.7}
        yield Sample(case_id("tversky[focal]", opts), _data(rng, dtype, mode), opts)
    opts = {"mode": "multiclass", "gamma": 1.5, "classes": (1, 2),
            "class_weights": np.array([1.0, 0.5, 2.0], dtype)}
    yield Sample(case_id("tversky[focal]", opts), _data(rng, dtype, "multiclass"), opts)
    x, t = _data(rng, dtype, "multilabel")
    opts = {"mode": "multilabel", "gamma": 2.0, "reduction": "sum"}
    yield Sample(case_id("tversky[focal]", opts), (x, t), opts, np.array(0.5, dtype))


def _overlap_random(name):
    def random_sample(rng, dtype):
        mode = str(rng.choice(MODES))
        n = int(rng.integers(1, 4))
        c = int(rng.integers(1, 5))
        spatial = tuple(int(s) for s in rng.integers(1, 5, size=int(rng.integers(0, 3))))
        opts = {"mode": mode, "reduction": str(rng.choice(REDUCTIONS))}
        if rng.random() < 0.3:
            opts["log_loss"] = True
        if rng.random() < 0.3:
            opts["smooth"] = float(rng.choice([0.5, 1.0]))
        from_logits = rng.random() < 0.8
        if not from_logits:
            opts["from_logits"] = False
        ignore = None
        if rng.random() < 0.3:
            ignore = 255 if mode == "multiclass" else -1
            opts["ignore_index"] = ignore
        if mode != "binary" and rng.random() < 0.3:
            opts["classes"] = tuple(int(k) for k in rng.integers(0, c, size=int(
                rng.integers(1, 4))))
        if mode != "binary" and rng.random() < 0.3:
            opts["class_weights"] = rng.choice([0.5, 1.0, 2.0], size=c).astype(dtype)
        if name == "tversky":
            opts["alpha"] = float(rng.choice([0.3, 0.5, 0.7]))
            opts["beta"] = float(rng.choice([0.3, 0.5, 0.7]))
            if rng.random() < 0.4:
                opts["gamma"] = float(rng.choice([0.75, 2.0]))
        if rng.random() < 0.3:
            opts["empty_reduction"] = "zero"
        inputs = _data(rng, dtype, mode, n=n, c=c, spatial=spatial, from_logits=from_logits,
                       ignore=ignore)
        sw = None
        if rng.random() < 0.5:
            sw = _weights(rng, _loss_shape(_overlap_check, inputs, _full(name, opts)), dtype)
        return Sample(case_id(f"{name}[random]", opts), inputs, opts, sw)

    return random_sample


# ---------------------------------------------------------------------------------------------
# references: smp's loss classes themselves


def _as_list(x):
    return None if x is None else [float(v) for v in x.detach().cpu().double().numpy()]


def _overlap_reference(cls_name):
    def reference(torch, inputs, opts, reduction):
        losses = smp_losses()
        x, t = inputs
        t = t.detach()
        mode = opts["mode"]
        if mode == "multiclass":
            t = t.long()  # smp's one_hot takes int64 only
        kw = {"mode": mode, "log_loss": opts["log_loss"], "from_logits": opts["from_logits"],
              "smooth": opts["smooth"], "ignore_index": opts["ignore_index"],
              "eps": opts["eps"]}
        if cls_name == "TverskyLoss":
            kw.update(alpha=opts["alpha"], beta=opts["beta"], gamma=opts["gamma"])
        cls = getattr(losses, cls_name)
        cw = opts.get("class_weights")
        c = 1 if mode == "binary" else x.shape[1]
        sel = list(_selected(opts, c))
        classes = None if opts["classes"] is None else list(opts["classes"])
        if _overlap_scalar(opts) or reduction == "mean":
            return cls(classes=classes, class_weights=_as_list(cw), **kw)(x, t)
        # one loss per selected class: smp's loss with classes=[k] (the mean of one)
        if mode == "binary":
            per = cls(**kw)(x, t).reshape(1)
        else:
            per = torch.stack([cls(classes=[k], **kw)(x, t) for k in sel]) if sel else \
                x.sum() * 0
        if cw is not None:
            per = per * cw[sel].to(per.dtype)
        return per if reduction == "none" else per.sum()

    return reference


def _lovasz_grad64(gt_sorted):
    """smp's ``_lovasz_grad`` with its float32 casts (``.float()``) replaced by float64: smp
    computes the Jaccard weights in float32 whatever the input's dtype (a 0-d float64 sum
    minus a float32 cumsum is float32), and its ``torch.dot`` then raises for float64 input."""
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.double().cumsum(0)
    union = gts + (1 - gt_sorted).double().cumsum(0)
    jaccard = 1.0 - intersection / union
    if p > 1:
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def _lovasz_reference(torch, inputs, opts, reduction):
    x = inputs[0]
    if x.dtype != torch.float64:
        return _lovasz_reference_smp(torch, inputs, opts, reduction)
    module = sys.modules[smp_losses().__name__ + ".lovasz"]
    original = module._lovasz_grad
    module._lovasz_grad = _lovasz_grad64
    try:
        return _lovasz_reference_smp(torch, inputs, opts, reduction)
    finally:
        module._lovasz_grad = original


def _lovasz_reference_smp(torch, inputs, opts, reduction):
    losses = smp_losses()
    x, t = inputs
    t = t.detach()
    mode = opts["mode"]
    if mode == "multiclass":
        t = t.long()
    else:
        # smp computes the Jaccard weights from the labels' dtype and raises (torch.dot) for
        # integer labels with float64 logits: the labels are cast to the logits' dtype
        t = t.to(x.dtype)

    def one(xi, ti):
        out = losses.LovaszLoss(mode=mode, per_image=False, ignore_index=opts["ignore_index"])(
            xi, ti)
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            # smp returns an empty (0, C) tensor where no pixel is valid (multiclass) and a
            # Python 0 for an empty mean: multiloss's 0, with a zero gradient
            return xi.sum() * 0
        return out.reshape(())

    if not opts["per_image"]:
        out = one(x, t)
        return out if reduction != "none" else out
    if reduction == "mean":
        out = losses.LovaszLoss(mode=mode, per_image=True, ignore_index=opts["ignore_index"])(
            x, t)
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            return out.reshape(())
    per = [one(x[i:i + 1], t[i:i + 1]) for i in range(x.shape[0])]
    per = torch.stack(per) if per else x.sum(tuple(range(1, x.ndim))) * 0
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.mean()


# ---------------------------------------------------------------------------------------------
# lovasz samples


def _lovasz_samples(rng, dtype):
    for g in grid(mode=MODES, per_image=(False, True)):
        for red in (("mean", "none", "sum") if g["per_image"] else ("mean",)):
            opts = {**g, "reduction": red}
            inputs = _data(rng, dtype, g["mode"])
            sw = None
            if g["per_image"] and red != "sum":
                sw = _weights(rng, (inputs[0].shape[0],), dtype)
            yield Sample(case_id("lovasz", {**opts, "sw": sw is not None}), inputs, opts, sw)
    for mode in MODES:
        opts = {"mode": mode, "per_image": True, "reduction": "sum_over_batch_size"}
        yield Sample(case_id("lovasz", opts), _data(rng, dtype, mode, n=3), opts)
    # more pixels than torch's stable small sort (no ties), 3-D volumes
    for mode in MODES:
        opts = {"mode": mode}
        yield Sample(case_id("lovasz[large]", opts),
                     _data(rng, dtype, mode, n=2, c=3, spatial=(4, 5)), opts)
    opts = {"mode": "multiclass", "per_image": True, "reduction": "none"}
    yield Sample(case_id("lovasz[volume]", opts),
                 _data(rng, dtype, "multiclass", n=2, c=3, spatial=(2, 2, 3)), opts)
    # ignore_index: some pixels, every pixel of one image
    for mode in MODES:
        ig = 255 if mode == "multiclass" else -1
        for per_image in (False, True):
            opts = {"mode": mode, "ignore_index": ig, "per_image": per_image,
                    "reduction": "none"}
            yield Sample(case_id("lovasz", opts), _data(rng, dtype, mode, ignore=ig), opts)
        x, t = _data(rng, dtype, mode, ignore=ig)
        t = np.array(t)
        t[0] = ig
        opts = {"mode": mode, "ignore_index": ig, "per_image": True, "reduction": "none"}
        yield Sample(case_id("lovasz[void-image]", opts), (x, t), opts)
    # ties at the hinge (errors exactly 0: logit +1 on label 1, -1 on label 0) and tied errors
    # in the sort (<= 16 per sorted array, where torch's sort is stable, as multiloss's)
    x = np.array([[[1.0, -1.0, 0.5, 1.0], [0.0, 0.0, -1.0, 2.0]]], dtype)
    t = np.array([[[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]]], dtype)
    for red in ("none", "mean"):
        opts = {"mode": "binary", "per_image": True, "reduction": red}
        yield Sample(case_id("lovasz[ties]", opts), (x.reshape(1, 1, 2, 4), t), opts)
    xm = np.zeros((1, 3, 2, 2), dtype)
    xm[0, 0, 0, 0] = 1.0
    tm = np.array([[[0, 1], [2, 0]]], np.int64)
    opts = {"mode": "multiclass", "reduction": "mean"}
    yield Sample(case_id("lovasz[ties]", opts), (xm, tm), opts)
    # logits of +-1e4: the hinge far from 0, the softmax saturated (errors exactly 0 and 1);
    # every error tied with others: at most 16 per sorted array (torch's sort is stable there)
    for mode in MODES:
        x, t = _data(rng, dtype, mode, spatial=(2, 2))
        x = np.where(rng.random(x.shape) < 0.5, 1e4, -1e4).astype(dtype)
        opts = {"mode": mode, "per_image": True, "reduction": "none"}
        yield Sample(case_id("lovasz[logits+-1e4]", opts), (x, t), opts)
    # empty masks: no foreground in an image, or in the batch
    x, t = _data(rng, dtype, "binary")
    t = np.zeros_like(t)
    for per_image in (False, True):
        opts = {"mode": "binary", "per_image": per_image, "reduction": "sum"}
        yield Sample(case_id("lovasz[empty-masks]", opts), (x, t), opts)
    # nothing counts: an empty batch (per image: a mean over no image), zero weights
    x, t = _data(rng, dtype, "multiclass", n=0)
    opts = {"mode": "multiclass", "per_image": True}
    yield Sample(case_id("lovasz[empty-batch]", opts), (x, t), opts, None, True)
    opts = {"mode": "binary", "per_image": False, "reduction": "sum"}
    xb, tb = _data(rng, dtype, "binary", n=0)
    yield Sample(case_id("lovasz[empty-batch]", opts), (xb, tb), opts)
    x, t = _data(rng, dtype, "multiclass")
    for emp in ("nan", "zero"):
        opts = {"mode": "multiclass", "per_image": True, "empty_reduction": emp}
        yield Sample(f"lovasz[zero-sample-weights,empty={emp}]", (x, t), opts,
                     np.zeros(x.shape[0], dtype))


def _lovasz_random(rng, dtype):
    mode = str(rng.choice(MODES))
    n = int(rng.integers(1, 4))
    # smp's Lovasz-softmax raises for one class ("Sigmoid output possible only with 1 class")
    c = int(rng.integers(2 if mode == "multiclass" else 1, 5))
    # smp reads a 3-D multiclass input (N, C, L) as a sigmoid output (N, H, W): 0 or 2 axes
    rank = int(rng.choice([0, 2])) if mode == "multiclass" else int(rng.integers(1, 3))
    spatial = tuple(int(s) for s in rng.integers(1, 5, size=rank))
    opts = {"mode": mode, "per_image": bool(rng.random() < 0.5),
            "reduction": str(rng.choice(REDUCTIONS))}
    ignore = None
    if rng.random() < 0.3:
        ignore = 255 if mode == "multiclass" else -1
        opts["ignore_index"] = ignore
    if rng.random() < 0.3:
        opts["empty_reduction"] = "zero"
    inputs = _data(rng, dtype, mode, n=n, c=c, spatial=spatial, ignore=ignore)
    sw = None
    if rng.random() < 0.5:
        sw = _weights(rng, (n,) if opts["per_image"] else (), dtype)
    return Sample(case_id("lovasz[random]", opts), inputs, opts, sw)


# ---------------------------------------------------------------------------------------------
# specs

INPUTS = (
    InputSpec("input", "predictions: logits (from_logits=True) or probabilities, (N, C, *) "
              "(binary: (N, 1, *) or (N, *))"),
    InputSpec("target", "binary: a {0, 1} mask of the input's shape (or without its channel "
              "axis); multiclass: class indices (N, *); multilabel: a mask (N, C, *). Not "
              "differentiated", differentiable=False),
)

_SCORE = (
    "p = softmax(x, axis=1) (multiclass) or sigmoid(x) (binary, multilabel), as "
    "exp(log_softmax) / exp(logsigmoid); t = one_hot(target) (multiclass) or target;\n"
    "ignore_index: p and t are 0 where target == ignore_index;\n"
    "per class c, over the batch and every pixel i: S_p = sum p, S_t = sum t, "
    "D = sum |p - t|;\n"
    "I_c = (S_p + S_t - D) / 2 (sum p t for t in {0, 1}); FP = S_p - I_c; FN = S_t - I_c;\n"
)
_LOSS = (
    "l_c = 1 - s_c, or -log(max(s_c, eps)) with log_loss; l_c = 0 where S_t = 0 (a class absent "
    "from the batch's targets);\n"
    "unreduced loss: l_c for c in classes (shape (K,), K = len(classes), C, or 1 for binary), "
    "times class_weights[c]; 'mean' = sum_c w_c l_c / sum_c w_c (smp's value: the mean over "
    "classes); sample_weight weighs classes."
)
_OVERLAP_NOTES = (
    f"segmentation_models_pytorch {SMP_VERSION}: the loss is one number for the batch, computed from "
    "soft counts summed over the batch (not a mean of per-image losses), averaged over the "
    "classes. multiloss's unreduced loss is the per-class vector that smp averages, so the "
    "default reduction 'mean' is smp's value, 'none' gives the class losses and sample_weight "
    "weighs classes (shape (K,)). smp returns 0 for a class absent from the batch's targets and "
    "still counts it in the mean (a batch without any foreground gives 0). smp requires mode; "
    "multiloss defaults to 'multiclass'. smp's class_weights are rounded to float32; "
    "multiloss keeps their dtype (the input's). smp fails on an empty batch (reshape of 0 "
    "elements with -1); multiloss gives 0 per class. smp raises for int32 class indices "
    "without ignore_index (one_hot takes int64); multiloss accepts any integer dtype. The target "
    "is not differentiated (it is a mask). MONAI's DiceLoss averages per-image scores by "
    "default and smooths with 1e-5; Keras' Dice is 1 - 2 sum(p t) / (sum p + sum t) over each "
    "sample: neither gives smp's numbers."
)

OVERLAP_OPTIONS = (MODE, CLASSES, LOG_LOSS, FROM_LOGITS, SMOOTH, IGNORE, EPS, CLASS_WEIGHTS)

register(LossSpec(
    name="dice",
    family=FAMILY,
    summary="Soft Dice loss (1 - Dice score per class, averaged over classes), as "
            "segmentation_models_pytorch's DiceLoss.",
    aliases=("dice_loss", "soft_dice", "DiceLoss"),
    inputs=INPUTS,
    options=OVERLAP_OPTIONS,
    formula=_SCORE + "s_c = (I_c + smooth) / max(I_c + FP/2 + FN/2 + smooth, eps) "
            "(= (2 I_c + 2 smooth) / (S_p + S_t + 2 smooth) above eps);\n" + _LOSS,
    reference_name=f"segmentation_models_pytorch.losses.DiceLoss (smp {SMP_VERSION}, loaded by "
                   f"path); per-class values from DiceLoss(classes=[c])",
    notes=_OVERLAP_NOTES,
    check=_overlap_check,
    check_values=_check_indices,
    value_args=("target",),
    samples=_overlap_samples("dice"),
    random_sample=_overlap_random("dice"),
    reference=_overlap_reference("DiceLoss"),
    normalizer=_overlap_normalizer,
    warn=_overlap_warn,
    batch_coupled=True,  # soft counts summed over the batch: one loss per class
))

register(LossSpec(
    name="jaccard",
    family=FAMILY,
    summary="Soft Jaccard (IoU) loss (1 - IoU per class, averaged over classes), as "
            "segmentation_models_pytorch's JaccardLoss.",
    aliases=("jaccard_loss", "iou_segmentation", "soft_jaccard", "JaccardLoss"),
    inputs=INPUTS,
    options=OVERLAP_OPTIONS,
    formula=_SCORE + "s_c = (I_c + smooth) / max(I_c + FP + FN + smooth, eps) "
            "(= (I + smooth) / (S_p + S_t - I + smooth));\n" + _LOSS,
    reference_name=f"segmentation_models_pytorch.losses.JaccardLoss (smp {SMP_VERSION}, loaded "
                   f"by path); per-class values from JaccardLoss(classes=[c])",
    notes=_OVERLAP_NOTES,
    check=_overlap_check,
    check_values=_check_indices,
    value_args=("target",),
    samples=_overlap_samples("jaccard"),
    random_sample=_overlap_random("jaccard"),
    reference=_overlap_reference("JaccardLoss"),
    normalizer=_overlap_normalizer,
    warn=_overlap_warn,
    batch_coupled=True,  # soft counts summed over the batch: one loss per class
))

register(LossSpec(
    name="tversky",
    family=FAMILY,
    summary="Tversky loss (FP weighted by alpha, FN by beta), focal-Tversky with gamma != 1, "
            "as segmentation_models_pytorch's TverskyLoss.",
    aliases=("tversky_loss", "focal_tversky", "TverskyLoss"),
    inputs=INPUTS,
    options=OVERLAP_OPTIONS + (
        Option("alpha", 0.5, "weight of the false positives", real(0.0)),
        Option("beta", 0.5, "weight of the false negatives", real(0.0)),
        Option("gamma", 1.0, "power of the class mean: (mean_c l_c) ** gamma (focal-Tversky "
               "for gamma != 1, smp's placement)", real(0.0, lo_open=True)),
    ),
    formula=_SCORE + "s_c = (I_c + smooth) / max(I_c + alpha FP + beta FN + smooth, eps);\n"
            + _LOSS + "\ngamma != 1: the unreduced loss is one number, "
            "(sum_c w_c l_c / sum_c w_c) ** gamma (shape (); sample_weight a scalar).",
    reference_name=f"segmentation_models_pytorch.losses.TverskyLoss (smp {SMP_VERSION}, loaded "
                   f"by path); per-class values from TverskyLoss(classes=[c]) (gamma = 1)",
    notes=_OVERLAP_NOTES + " smp raises the class MEAN to gamma ((mean_c l_c) ** gamma); the "
    "focal Tversky paper (Abraham & Khan 2019) raises each class's loss (sum_c l_c ** (1 / "
    "gamma)). multiloss follows smp, so with gamma != 1 the loss does not decompose over "
    "classes: reduction='none' returns the batch's loss as a 0-d array, every reduction "
    "returns it (times a scalar sample_weight), and 'sum' equals 'mean'.",
    check=_overlap_check,
    check_values=_check_indices,
    value_args=("target",),
    samples=_overlap_samples("tversky", _tversky_extra),
    random_sample=_overlap_random("tversky"),
    reference=_overlap_reference("TverskyLoss"),
    normalizer=_overlap_normalizer,
    warn=_overlap_warn,
    batch_coupled=True,  # soft counts summed over the batch: one loss per class
))

register(LossSpec(
    batch_coupled=lambda o: not o["per_image"],  # one sorted error list over the batch
    name="lovasz",
    family=FAMILY,
    summary="Lovasz loss (Berman et al. 2018): the Lovasz hinge (binary, multilabel) or "
            "Lovasz-softmax (multiclass) surrogate of the Jaccard loss, as "
            "segmentation_models_pytorch's LovaszLoss.",
    aliases=("lovasz_loss", "lovasz_hinge", "lovasz_softmax", "LovaszLoss"),
    inputs=INPUTS,
    options=(
        MODE,
        Option("per_image", False, "one loss per image, averaged (the unreduced loss has "
               "shape (N,)); False: one loss for the batch (shape ())", boolean),
        IGNORE,
        Option("from_logits", True, "smp accepts and ignores it (the hinge takes logits, "
               "the softmax is always applied); multiloss accepts True only", boolean),
    ),
    formula=(
        "rows: each image (per_image) or the whole batch, pixels flattened (binary and "
        "multilabel: every channel of the image together); pixels with target == "
        "ignore_index removed;\n"
        "binary / multilabel (hinge): e_i = 1 - x_i (2 t_i - 1); sort e descending (stable), "
        "g = lovasz_grad(t sorted); loss = sum_i relu(e_(i)) g_i;\n"
        "multiclass (softmax): p = softmax(x, axis=1); per class c present in the row: e_i = "
        "|[t_i = c] - p_ic|, loss_c = sum_i e_(i) g_i with g = lovasz_grad([t = c] sorted); "
        "loss = mean over the present classes (0 if none);\n"
        "lovasz_grad(gt): J_k = 1 - (G - cumsum(gt)_k) / (G + cumsum(1 - gt)_k), G = sum gt; "
        "g = (J_1, J_2 - J_1, ...);\n"
        "unreduced: (N,) per image (per_image) or () for the batch; 'mean' = the mean over "
        "images (smp's per_image value)."
    ),
    reference_name=f"segmentation_models_pytorch.losses.LovaszLoss (smp {SMP_VERSION}, loaded "
                   f"by path; per-image values from LovaszLoss on each image)",
    converts={"input": ("f", "float32+")},
    notes=(
        "float16/bfloat16 logits are computed in float32 and the loss is float32, as smp's "
        "binary and multilabel modes (their labels.float() makes the errors float32); smp's "
        "multiclass mode raises on float16 (torch.dot of Half and Float), multiloss computes "
        "it the same way. "
        f"segmentation_models_pytorch {SMP_VERSION}: smp sorts the errors with torch.sort, which "
        "is not stable for more than 16 elements: the order of tied errors, and so the "
        "gradient at ties (a subgradient), is arbitrary there; multiloss sorts stably on both "
        "backends (ties keep the pixel order, torch's order for 16 elements or fewer). Where no "
        "pixel of a row is valid (all ignored, an empty batch) smp returns an empty (0, C) "
        "tensor (multiclass) or 0 (binary); multiloss gives 0 with a zero gradient. smp's "
        "per_image mean of an empty batch is the Python int 0; multiloss's contract gives NaN "
        "('mean' over nothing; empty_reduction). smp computes the Jaccard weights in the "
        "labels' dtype (float32 for integer labels, which then fails in torch.dot against "
        "float64 logits); multiloss in the input's dtype. smp treats a 3-D multiclass input "
        "(N, C, L) as a sigmoid output (N, H, W); multiloss as (N, C, L). The target is not "
        "differentiated."
    ),
    check=_lovasz_check,
    check_values=_check_indices,
    value_args=("target",),
    samples=_lovasz_samples,
    random_sample=_lovasz_random,
    reference=_lovasz_reference,
    normalizer=_lovasz_normalizer,
    warn=_lovasz_warn,
))


# ---------------------------------------------------------------------------------------------
# generalized dice (Sudre et al. 2017), MONAI's GeneralizedDiceLoss semantics


W_TYPES = ("square", "simple", "uniform")


def _w_type(name, value):
    if value not in W_TYPES:
        raise ValueError(f"{name}: expected one of {list(W_TYPES)}, got {value!r}")
    return value


def _gdl_check(named, opts):
    _check_target(named, opts)
    return () if opts["batch"] else named["input"].shape[:1]


def _gdl_normalizer(inputs, opts):
    shape = () if opts["batch"] else np.shape(inputs[0])[:1]
    return np.ones(shape), np.ones(shape)


def _gdl_reference(torch, inputs, opts, reduction):
    """A torch transcription of MONAI's GeneralizedDiceLoss.forward (monai/losses/dice.py:
    sigmoid/softmax, per-(image, class) sums over the spatial axes (and the batch with
    batch=True), w = 1 / G^2 ('square'), 1 / G ('simple') or 1; infinite weights (a class
    without foreground) set to 0 and then to the largest weight of the image; f = 1 - (2
    sum_c w I + smooth_nr) / (sum_c w (G + P) + smooth_dr)), written per image with Python
    loops as MONAI's 0.7 code, on smp's input layout (modes, ignore_index zeroing p and t).
    MONAI is not installed here; its weights are computed in float32 (``ground_o.float()``),
    here in the input's dtype."""
    x, t = inputs
    t = t.detach()
    mode = opts["mode"]
    if not opts["from_logits"]:
        p = x
    elif mode == "multiclass":
        p = torch.softmax(x, 1)
    else:
        p = torch.sigmoid(x)
    n = x.shape[0]
    if mode == "multiclass":
        c = x.shape[1]
        lab = t.reshape(n, -1) if t.numel() else t.reshape(n, 0)
        p = p.reshape(n, c, -1) if p.numel() else p.reshape(n, c, 0)
        valid = torch.ones_like(lab, dtype=torch.bool)
        if opts["ignore_index"] is not None:
            valid = lab != opts["ignore_index"]
        onehot = torch.zeros_like(p)
        for k in range(c):
            onehot[:, k] = ((lab == k) & valid).to(p.dtype)
        tt = onehot
        p = p * valid.unsqueeze(1).to(p.dtype)
    else:
        cc = 1 if mode == "binary" else x.shape[1]
        size = int(np.prod(x.shape[1:])) // cc if cc else 0
        p = p.reshape(n, cc, size)
        tt = t.reshape(n, cc, size)
        if opts["ignore_index"] is not None:
            keep = (tt != opts["ignore_index"]).to(p.dtype)
            p = p * keep
            tt = tt.to(p.dtype) * keep
        tt = tt.to(p.dtype)
    reduce_axis = [0, 2] if opts["batch"] else [2]
    intersection = torch.sum(tt * p, reduce_axis)
    ground_o = torch.sum(tt, reduce_axis)
    pred_o = torch.sum(p, reduce_axis)
    denominator = ground_o + pred_o
    if opts["w_type"] == "simple":
        w = torch.reciprocal(ground_o)
    elif opts["w_type"] == "square":
        w = torch.reciprocal(ground_o * ground_o)
    else:
        w = torch.ones_like(ground_o)
    w = w.detach().clone()
    rows = [w] if opts["batch"] else list(w)
    for b in rows:
        infs = torch.isinf(b)
        b[infs] = 0.0
        if b.numel():
            b[infs] = torch.max(b)
    dim = 0 if opts["batch"] else 1
    f = 1.0 - (2.0 * (intersection * w).sum(dim) + opts["smooth_nr"]) / (
        (denominator * w).sum(dim) + opts["smooth_dr"])
    if reduction == "mean":
        return torch.mean(f)
    if reduction == "sum":
        return torch.sum(f)
    return f


def _gdl_samples(rng, dtype):
    for g in grid(mode=MODES, reduction=REDUCTIONS):
        opts = dict(g)
        inputs = _data(rng, dtype, g["mode"])
        sw = _weights(rng, (inputs[0].shape[0],), dtype) if g["reduction"] in (
            "mean", "none") else None
        yield Sample(case_id("generalized_dice", {**opts, "sw": sw is not None}), inputs, opts,
                     sw)
    for mode in MODES:
        opts = {"mode": mode, "batch": True}
        yield Sample(case_id("generalized_dice", opts), _data(rng, dtype, mode, n=3), opts)
        ig = 255 if mode == "multiclass" else -1
        opts = {"mode": mode, "ignore_index": ig, "reduction": "none"}
        yield Sample(case_id("generalized_dice", opts), _data(rng, dtype, mode, ignore=ig), opts)
    for w_type in ("simple", "uniform"):
        opts = {"w_type": w_type, "reduction": "none"}
        yield Sample(case_id("generalized_dice", opts), _data(rng, dtype, "multiclass", n=3),
                     opts)
    opts = {"mode": "multilabel", "smooth_nr": 0.0, "smooth_dr": 1e-3, "reduction": "none"}
    yield Sample(case_id("generalized_dice", opts), _data(rng, dtype, "multilabel"), opts)
    opts = {"mode": "multiclass", "from_logits": False, "reduction": "none"}
    x, t = _data(rng, dtype, "multiclass", from_logits=False)
    x[0, :, 0, 0] = np.array([1.0, 0.0, 0.0], dtype)
    yield Sample(case_id("generalized_dice[probabilities-0-1]", opts), (x, t), opts)
    for mode in ("binary", "multiclass"):
        x, t = _data(rng, dtype, mode)
        x = np.where(rng.random(x.shape) < 0.5, 1e4, -1e4).astype(dtype)
        opts = {"mode": mode, "reduction": "none"}
        yield Sample(case_id("generalized_dice[logits+-1e4]", opts), (x, t), opts)
    # empty masks: a class absent from an image (infinite weight -> the image's largest),
    # an image without any foreground (every weight 0: 1 - smooth_nr / smooth_dr)
    x, t = _data(rng, dtype, "multiclass", c=4)
    t = np.where(t == 3, 1, t)
    t[0] = 0
    opts = {"mode": "multiclass", "reduction": "none"}
    yield Sample(case_id("generalized_dice[empty-class]", opts), (x, t), opts)
    x, t = _data(rng, dtype, "multilabel")
    t = np.array(t)
    t[1] = 0
    opts = {"mode": "multilabel", "reduction": "none"}
    yield Sample(case_id("generalized_dice[empty-image]", opts), (x, t), opts)
    x, t = _data(rng, dtype, "multiclass")
    for emp in ("nan", "zero"):
        opts = {"empty_reduction": emp}
        yield Sample(f"generalized_dice[zero-sample-weights,empty={emp}]", (x, t), opts,
                     np.zeros(x.shape[0], dtype))
    x, t = _data(rng, dtype, "multiclass", n=0)
    yield Sample("generalized_dice[empty-batch,reduction=mean]", (x, t), {})


def _gdl_random(rng, dtype):
    mode = str(rng.choice(MODES))
    n = int(rng.integers(1, 4))
    c = int(rng.integers(1, 5))
    spatial = tuple(int(s) for s in rng.integers(1, 5, size=int(rng.integers(0, 3))))
    opts = {"mode": mode, "reduction": str(rng.choice(REDUCTIONS)),
            "batch": bool(rng.random() < 0.3), "w_type": str(rng.choice(W_TYPES))}
    from_logits = rng.random() < 0.8
    if not from_logits:
        opts["from_logits"] = False
    ignore = None
    if rng.random() < 0.3:
        ignore = 255 if mode == "multiclass" else -1
        opts["ignore_index"] = ignore
    if rng.random() < 0.3:
        opts["empty_reduction"] = "zero"
    inputs = _data(rng, dtype, mode, n=n, c=c, spatial=spatial, from_logits=from_logits,
                   ignore=ignore)
    sw = None
    if rng.random() < 0.5:
        sw = _weights(rng, () if opts["batch"] else (n,), dtype)
    return Sample(case_id("generalized_dice[random]", opts), inputs, opts, sw)


register(LossSpec(
    batch_coupled=lambda o: o["batch"],  # batch=True: sums over the batch
    name="generalized_dice",
    family=FAMILY,
    summary="Generalized Dice loss (Sudre et al. 2017): one Dice over the classes, each "
            "weighted by the inverse squared volume of its target, as MONAI's "
            "GeneralizedDiceLoss.",
    aliases=("generalized_dice_loss", "generalised_dice", "gdl", "GeneralizedDiceLoss"),
    inputs=INPUTS,
    options=(
        MODE,
        Option("from_logits", True, "the input is logits: softmax over the class axis "
               "(multiclass) or sigmoid (MONAI's softmax=True / sigmoid=True); False: "
               "probabilities", boolean),
        IGNORE,
        Option("w_type", "square", "the class weight from the target volume G: 1 / G^2 "
               "('square', the paper's), 1 / G ('simple') or 1 ('uniform')", _w_type,
               allowed="'square' | 'simple' | 'uniform'"),
        Option("smooth_nr", 1e-5, "added to the numerator (MONAI's default)", real(0.0)),
        Option("smooth_dr", 1e-5, "added to the denominator (MONAI's default)", real(0.0)),
        Option("batch", False, "sum over the batch before the ratio (one loss for the batch, "
               "shape ()); False: one loss per image, shape (N,)", boolean),
    ),
    formula=(
        "p = softmax(x, axis=1) (multiclass) or sigmoid(x); t = one_hot(target) (multiclass) "
        "or target; p and t are 0 where target == ignore_index;\n"
        "per image b (or over the batch with batch=True) and class c, over the pixels: "
        "I_bc = sum t p, G_bc = sum t, P_bc = sum p;\n"
        "w_bc = 1 / G_bc^2 ('square'); a class with G_bc = 0 (infinite weight) gets the largest "
        "finite weight of its image (0 if none);\n"
        "l_b = 1 - (2 sum_c w_bc I_bc + smooth_nr) / (sum_c w_bc (G_bc + P_bc) + smooth_dr);\n"
        "unreduced: (N,) (batch=False) or (); 'mean' = the mean over images (MONAI's)."
    ),
    reference_name=(
        "a torch transcription of MONAI's GeneralizedDiceLoss (monai/losses/dice.py, read from "
        "Project-MONAI/MONAI; MONAI is not installed here) written inside the spec module, on "
        "smp's input layout (modes, ignore_index)"
    ),
    notes=(
        "segmentation_models_pytorch has no generalized Dice; multiloss takes smp's inputs "
        "(mode, from_logits, ignore_index) and MONAI's formula and options (w_type, smooth_nr, "
        "smooth_dr, batch; MONAI's include_background, to_onehot_y and other_act are not "
        "here: pass one-hot targets as mode='multilabel'). MONAI computes the weights in "
        "float32 (ground_o.float()) even for float64 input; multiloss in the input's dtype. "
        "Sudre et al. (2017) write the weights without MONAI's replacement of infinite "
        "weights (a class absent from an image), and without smoothing. The weights are "
        "constants (no gradient flows through them), as in MONAI (they depend on the "
        "target only). The target is not differentiated."
    ),
    check=_gdl_check,
    check_values=_check_indices,
    value_args=("target",),
    samples=_gdl_samples,
    random_sample=_gdl_random,
    reference=_gdl_reference,
    normalizer=_gdl_normalizer,
))
