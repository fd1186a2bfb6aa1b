"""The fused-linear forms of the post-training losses, framework-free: for each, how the
per-token log-probs of a chunk's units (pairs, sequences) become the plain loss's inputs.
The same function serves the JAX and torch engines (per chunk), the torch reference (on the
materialised logits) and the NumPy normaliser: it only slices, sums and divides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Form:
    """``name``: the fused loss; ``plain``: the loss it equals on the materialised logits;
    ``paired``: rows are [chosen (N); rejected (N)] and a unit is a pair (its 2T tokens), else
    a unit is a sequence; ``ref``: whether it takes the reference model's hidden states and
    head; ``extras``: the plain loss's other inputs, in order (one leading axis N, but those
    named in ``scalars``), each optional where the plain loss's is (None: left out);
    ``scalars``: the extras that are one number for the batch (kto's kl): the engines chunk
    them broadcast over the units, ``to_plain`` reads them back (``_scalar``);
    ``average(opts)``: length-averaged log-probs (TRL's ``average_log_prob``); ``nll``: the
    pair's share of the batch's chosen-token NLL is an input of the plain loss;
    ``to_plain(tok, valid, ref_tok, extras, nll_scale, opts)``: the plain loss's inputs."""

    name: str
    plain: str
    family: str
    paired: bool
    ref: bool
    extras: tuple
    to_plain: Callable
    average: Callable = field(default=lambda opts: False)
    nll: bool = False
    scalars: tuple = ()


def _seq(tok, valid, average):
    s = tok.sum(-1)
    return s / valid.sum(-1) if average else s


def _halves(a):
    t = a.shape[-1] // 2
    return a[..., :t], a[..., t:]


def _pair_logps(tok, valid, average):
    (tc, tr), (vc, vr) = _halves(tok), _halves(valid)
    return _seq(tc, vc, average), _seq(tr, vr, average)


def _dpo_average(opts):
    from ..preference import DPO_LENGTH_NORMALISED

    return any(t in DPO_LENGTH_NORMALISED for t in opts["loss_type"])


def _dpo(tok, valid, rtok, extras, nll_scale, opts):
    avg = _dpo_average(opts)
    c, r = _pair_logps(tok, valid, avg)
    rc, rr = _pair_logps(rtok, valid, avg)
    return c, r, rc, rr


def _cpo_average(opts):
    return opts["loss_type"] in ("ipo", "simpo")


def _nll(tok, nll_scale):
    """The pair's share of TRL's NLL term: -(sum of its chosen tokens' log-probs) * N / (the
    batch's chosen tokens), so that the mean over pairs is TRL's token mean over the batch."""
    return -_halves(tok)[0].sum(-1) * nll_scale


def _cpo(tok, valid, rtok, extras, nll_scale, opts):
    c, r = _pair_logps(tok, valid, _cpo_average(opts))
    return c, r, _nll(tok, nll_scale)


def _simpo(tok, valid, rtok, extras, nll_scale, opts):
    return _pair_logps(tok, valid, True)


def _orpo(tok, valid, rtok, extras, nll_scale, opts):
    c, r = _pair_logps(tok, valid, True)
    return c, r, _nll(tok, nll_scale)


def _scalar(a):
    """A scalar extra as given (0-d), or read back from its broadcast over a chunk's units
    (the engines chunk every extra by units); None where it is left out."""
    if a is None or a.ndim == 0:
        return a
    return a[:1].sum()


def _kto(tok, valid, rtok, extras, nll_scale, opts):
    labels, kl = extras
    return tok.sum(-1), rtok.sum(-1), labels, _scalar(kl)  # kl None: left out, z_ref = 0


def _grpo(tok, valid, rtok, extras, nll_scale, opts):
    return (tok, *extras)


FORMS = {f.name: f for f in (
    Form("linear_dpo", "dpo", "preference", True, True, (), _dpo, _dpo_average),
    Form("linear_cpo", "cpo", "preference", True, False, (), _cpo, _cpo_average, nll=True),
    Form("linear_simpo", "simpo", "preference", True, False, (), _simpo, lambda o: True),
    Form("linear_orpo", "orpo", "preference", True, False, (), _orpo, lambda o: True, nll=True),
    Form("linear_kto", "kto", "preference", False, True, ("labels", "kl"), _kto,
         scalars=("kl",)),
    Form("linear_grpo", "grpo", "policy", False, False,
         ("old_logps", "advantages", "completion_mask", "ref_logps"), _grpo),
)}
