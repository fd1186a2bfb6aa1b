"""torch implementations of the segmentation losses (see the specs in ``__init__.py``):
segmentation_models_pytorch's operations written with torch's own functions (smp itself is
only the parity reference), vectorised over classes and images; lovasz sorts stably. Each
returns the unreduced ``Terms``; ``multiloss.backends._torch`` reduces them."""

from __future__ import annotations

import math

import torch
import torch.linalg as LA
import torch.nn.functional as F

from ...backends import Terms
from ...backends._torch import one_hot

LOW_PRECISION = (torch.float16, torch.bfloat16)


def _in_float32(fn):
    """float16/bfloat16 input computed in float32 and the loss rounded to the input's dtype
    once, at the end (as the JAX backend does): the soft counts and the Lovasz weights are
    sums over every pixel, which the low-precision dtypes cannot hold."""

    def wrapper(input, target, **kw):
        if input.dtype not in LOW_PRECISION:
            return fn(input, target, **kw)
        cw = kw.get("class_weights")
        if cw is not None:
            kw["class_weights"] = cw.float()
        t = fn(input.float(), target, **kw)
        return Terms(*(None if a is None else a.to(input.dtype) for a in t))

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _probs(x, mode, from_logits):
    if not from_logits:
        return x
    if mode == "multiclass":
        return x.log_softmax(dim=1).exp()
    return F.logsigmoid(x).exp()


def _nan_if(bad, like):
    one = torch.ones((), dtype=like.dtype, device=like.device)
    return torch.where(bad.any(), torch.full_like(one, float("nan")), one)


def _flatten(x, target, mode, ignore_index, p):
    """smp's layout (see ``_jax._flatten``): p and t of shape (N, C, P), and ``bad``."""
    n = x.shape[0]
    npix = math.prod(x.shape[2:])
    bad = None
    if mode == "binary":
        size = math.prod(x.shape[1:])
        p = p.reshape(n, 1, size)
        t = target.reshape(n, 1, size)
        if ignore_index is not None:
            m = t != ignore_index
            p = p * m
            t = t * m
    elif mode == "multiclass":
        c = x.shape[1]
        t = target.reshape(n, npix).long()
        p = p.reshape(n, c, npix)
        in_range = (t >= 0) & (t < c)
        if ignore_index is not None:
            m = t != ignore_index
            p = p * m.unsqueeze(1)
            bad = m & ~in_range
            safe = torch.where(bad, torch.zeros_like(t), t * m)
            t = one_hot(safe, c).permute(0, 2, 1) * m.unsqueeze(1)
        else:
            bad = ~in_range
            t = one_hot(torch.where(bad, torch.zeros_like(t), t), c).permute(0, 2, 1)
    else:
        c = x.shape[1]
        p = p.reshape(n, c, npix)
        t = target.reshape(n, c, npix)
        if ignore_index is not None:
            m = t != ignore_index
            p = p * m
            t = t * m
    return p, t.type_as(p), bad


def _overlap(input, target, *, mode, classes, log_loss, from_logits, smooth, ignore_index, eps,
             class_weights, alpha, beta, gamma):
    x = input
    target = target.detach()
    p, t, bad = _flatten(x, target, mode, ignore_index, _probs(x, mode, from_logits))
    dims = (0, 2)
    output_sum = torch.sum(p, dim=dims)
    target_sum = torch.sum(t, dim=dims)
    difference = LA.vector_norm(p - t, ord=1, dim=dims)
    intersection = (output_sum + target_sum - difference) / 2
    fp = output_sum - intersection
    fn = target_sum - intersection
    score = (intersection + smooth) / (intersection + alpha * fp + beta * fn + smooth).clamp_min(
        eps)
    loss = -torch.log(score.clamp_min(eps)) if log_loss else 1.0 - score
    loss = loss * (target_sum > 0).to(loss.dtype)
    if bad is not None:
        loss = loss * _nan_if(bad, loss)
    w = None if class_weights is None else class_weights.to(device=loss.device, dtype=loss.dtype)
    if classes is not None:
        idx = torch.tensor(classes, dtype=torch.long, device=loss.device)
        loss = loss[idx]
        w = None if w is None else w[idx]
    if gamma != 1.0:
        value = loss.mean() if w is None else (loss * w).sum() / w.sum()
        return Terms(value ** gamma)
    if w is None:
        return Terms(loss)
    return Terms(loss * w, weight=w)


@_in_float32
def dice(input, target, *, reduction, mode="multiclass", classes=None, log_loss=False,
         from_logits=True, smooth=0.0, ignore_index=None, eps=1e-7, class_weights=None):
    return _overlap(input, target, mode=mode, classes=classes, log_loss=log_loss,
                    from_logits=from_logits, smooth=smooth, ignore_index=ignore_index, eps=eps,
                    class_weights=class_weights, alpha=0.5, beta=0.5, gamma=1.0)


@_in_float32
def jaccard(input, target, *, reduction, mode="multiclass", classes=None, log_loss=False,
            from_logits=True, smooth=0.0, ignore_index=None, eps=1e-7, class_weights=None):
    return _overlap(input, target, mode=mode, classes=classes, log_loss=log_loss,
                    from_logits=from_logits, smooth=smooth, ignore_index=ignore_index, eps=eps,
                    class_weights=class_weights, alpha=1.0, beta=1.0, gamma=1.0)


@_in_float32
def tversky(input, target, *, reduction, mode="multiclass", classes=None, log_loss=False,
            from_logits=True, smooth=0.0, ignore_index=None, eps=1e-7, class_weights=None,
            alpha=0.5, beta=0.5, gamma=1.0):
    return _overlap(input, target, mode=mode, classes=classes, log_loss=log_loss,
                    from_logits=from_logits, smooth=smooth, ignore_index=ignore_index, eps=eps,
                    class_weights=class_weights, alpha=alpha, beta=beta, gamma=gamma)


# ---------------------------------------------------------------------------------------------
# lovasz


def _lovasz_grad(gt, valid):
    gts = gt.sum(dim=-1, keepdim=True)
    intersection = gts - gt.cumsum(dim=-1)
    union = gts + ((1 - gt) * valid).cumsum(dim=-1)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


def _sorted_dot(errors, gt, valid, hinge):
    key = torch.where(valid, errors, torch.full_like(errors, -math.inf))
    _, perm = torch.sort(key.detach(), dim=-1, descending=True, stable=True)
    es = errors.gather(-1, perm)
    gs = torch.where(valid, gt, torch.zeros_like(gt)).gather(-1, perm)
    vs = valid.gather(-1, perm)
    g = _lovasz_grad(gs, vs.to(errors.dtype))
    g = torch.where(vs, g, torch.zeros_like(g)).detach()
    f = F.relu(es) if hinge else es
    return torch.where(vs, f * g, torch.zeros_like(f)).sum(dim=-1)


@_in_float32
def lovasz(input, target, *, reduction, mode="multiclass", per_image=False, ignore_index=None,
           from_logits=True):
    x = input
    n = x.shape[0]
    target = target.detach()
    rows = n if per_image else 1
    if mode in ("binary", "multilabel"):
        size = math.prod(x.shape[1:]) * (1 if per_image else n)
        logits = x.reshape(rows, size)
        raw = target.reshape(rows, size)
        valid = (raw != ignore_index) if ignore_index is not None else \
            torch.ones(raw.shape, dtype=torch.bool, device=raw.device)
        labels = raw.to(x.dtype)
        signs = 2.0 * labels - 1.0
        errors = 1.0 - logits * signs
        loss = _sorted_dot(errors, labels, valid, hinge=True)
        return Terms(loss if per_image else loss.reshape(()))
    c = x.shape[1]
    p = x.softmax(dim=1)
    npix = math.prod(x.shape[2:]) * (1 if per_image else n)
    p = torch.movedim(p, 1, -1).reshape(rows, npix, c).transpose(1, 2)  # (rows, C, P)
    lab = target.reshape(rows, npix)
    valid = (lab != ignore_index) if ignore_index is not None else \
        torch.ones(lab.shape, dtype=torch.bool, device=lab.device)
    bad = valid & ((lab < 0) | (lab >= c))
    classes = torch.arange(c, device=lab.device)
    fg = ((lab.unsqueeze(1) == classes[None, :, None]) & valid.unsqueeze(1)).to(x.dtype)
    errors = (fg - p).abs()
    vmask = valid.unsqueeze(1).expand(fg.shape)
    per_class = _sorted_dot(errors, fg, vmask, hinge=False)
    present = fg.sum(dim=-1) > 0
    count = present.sum(dim=-1)
    total = torch.where(present, per_class, torch.zeros_like(per_class)).sum(dim=-1)
    loss = total / count.clamp_min(1).to(x.dtype)
    loss = loss * _nan_if(bad, loss)
    return Terms(loss if per_image else loss.reshape(()))


# ---------------------------------------------------------------------------------------------
# generalized dice


@_in_float32
def generalized_dice(input, target, *, reduction, mode="multiclass", from_logits=True,
                     ignore_index=None, w_type="square", smooth_nr=1e-5, smooth_dr=1e-5,
                     batch=False):
    x = input
    target = target.detach()
    if not from_logits:
        p = x
    elif mode == "multiclass":
        p = torch.softmax(x, 1)
    else:
        p = torch.sigmoid(x)
    p, t, bad = _flatten(x, target, mode, ignore_index, p)
    dims = (0, 2) if batch else (2,)
    intersection = torch.sum(t * p, dim=dims)
    ground_o = torch.sum(t, dim=dims)
    pred_o = torch.sum(p, dim=dims)
    denominator = ground_o + pred_o
    if w_type == "square":
        w = torch.reciprocal(ground_o * ground_o)
    elif w_type == "simple":
        w = torch.reciprocal(ground_o)
    else:
        w = torch.ones_like(ground_o)
    infs = torch.isinf(w)
    w = torch.where(infs, torch.zeros_like(w), w)
    if w.shape[-1]:
        w = w + infs.to(w.dtype) * w.amax(dim=-1, keepdim=True)
    w = w.detach()
    numer = 2.0 * (intersection * w).sum(-1) + smooth_nr
    denom = (denominator * w).sum(-1) + smooth_dr
    loss = 1.0 - numer / denom
    if bad is not None:
        loss = loss * _nan_if(bad, loss)
    return Terms(loss)
