"""GAN losses: ``gan_discriminator(real_logits, fake_logits)`` and ``gan_generator(fake_logits)``
with ``kind`` in nonsaturating, minimax, hinge, wasserstein, least_squares. Specs only;
implementations in ``_jax.py`` and ``_torch.py``.

There is no one library that defines these losses: the reference is a torch transcription of
the papers' formulas, written here with ``torch.nn.functional`` (``_reference``), as the
standard torch GAN code writes them:

- nonsaturating and minimax (Goodfellow et al. 2014): the discriminator's binary
  cross-entropy, ``F.binary_cross_entropy_with_logits`` against ones for the real logits and
  zeros for the fake ones. The generator: nonsaturating ``BCE(fake, 1) = -log D(G(z))``
  (the paper's recommended "-log D" trick), minimax ``-BCE(fake, 0) = log(1 - D(G(z)))`` (the
  paper's min-max objective itself, whose gradient vanishes where D rejects the fakes);
- hinge (Lim & Ye 2017, Miyato et al. 2018): ``relu(1 - real) + relu(1 + fake)`` and
  ``-fake``;
- wasserstein (Arjovsky et al. 2017, the critic of WGAN, without its weight clipping or a
  gradient penalty): ``fake - real`` and ``-fake``;
- least_squares (Mao et al. 2017, LSGAN with the 0-1 coding a = 0, b = c = 1):
  ``0.5 (real - 1)^2 + 0.5 fake^2`` and ``0.5 (fake - 1)^2``.

torch 2.13 computes ``binary_cross_entropy_with_logits(x, t)`` as ``(1 - t) x -
log_sigmoid(x)`` with ``log_sigmoid(x) = min(x, 0) - log1p(exp(-|x|))`` and the gradient
``sigmoid(x) - t``; the JAX backend follows those operations (so that it rounds as torch does,
e.g. ``BCE(-30, 0)`` = 9.2371e-14 in float64 where the exact value is 9.3576e-14), and at logits
of +-1e4 both give the exact 0 and 1e4 with gradients 0 and +-1.
"""

from __future__ import annotations

import numpy as np

from ..._registry import InputSpec, LossSpec, Option, Sample, register
from .._common import REDUCTIONS, case_id, expect_float, loss_shape_weight

FAMILY = "generative"

KINDS = ("nonsaturating", "minimax", "hinge", "wasserstein", "least_squares")


def _check_kind(name, value):
    if value not in KINDS:
        raise ValueError(f"{name}: expected one of {list(KINDS)}, got {value!r}")
    return value


KIND = Option(
    "kind", "nonsaturating",
    "the GAN objective: 'nonsaturating' and 'minimax' (Goodfellow et al. 2014), 'hinge' (Lim & "
    "Ye 2017, Miyato et al. 2018), 'wasserstein' (Arjovsky et al. 2017), 'least_squares' "
    "(Mao et al. 2017)", _check_kind, allowed=" | ".join(repr(k) for k in KINDS))


# ---------------------------------------------------------------------------------------------
# checks


def _check_discriminator(named, opts):
    r, f = named["real_logits"], named["fake_logits"]
    expect_float("real_logits", r)
    expect_float("fake_logits", f)
    if f.shape != r.shape:
        raise ValueError(
            f"fake_logits: expected the shape of real_logits, {r.shape}, got {f.shape} "
            f"(the discriminator's loss pairs the real and fake logits element by element; "
            f"for batches of different sizes take reduction='none' of each half apart)")
    return r.shape


def _check_generator(named, opts):
    expect_float("fake_logits", named["fake_logits"])
    return named["fake_logits"].shape


# ---------------------------------------------------------------------------------------------
# the reference: the papers' formulas with torch.nn.functional


def _bce(torch, x, target):
    return torch.nn.functional.binary_cross_entropy_with_logits(
        x, torch.full_like(x, target), reduction="none")


def reference_discriminator_terms(torch, real, fake, kind):
    """The discriminator's loss per element, as torch GAN code writes it."""
    F = torch.nn.functional
    if kind in ("nonsaturating", "minimax"):
        return _bce(torch, real, 1.0) + _bce(torch, fake, 0.0)
    if kind == "hinge":
        return F.relu(1.0 - real) + F.relu(1.0 + fake)
    if kind == "wasserstein":
        return fake - real
    return 0.5 * (real - 1.0) ** 2 + 0.5 * fake ** 2


def reference_generator_terms(torch, fake, kind):
    """The generator's loss per element, as torch GAN code writes it."""
    if kind == "nonsaturating":
        return _bce(torch, fake, 1.0)
    if kind == "minimax":
        return -_bce(torch, fake, 0.0)
    if kind in ("hinge", "wasserstein"):
        return -fake
    return 0.5 * (fake - 1.0) ** 2


def _reduce(torch, loss, reduction):
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def _ref_discriminator(torch, inputs, opts, reduction):
    real, fake = inputs
    return _reduce(torch, reference_discriminator_terms(torch, real, fake, opts["kind"]),
                   reduction)


def _ref_generator(torch, inputs, opts, reduction):
    (fake,) = inputs
    return _reduce(torch, reference_generator_terms(torch, fake, opts["kind"]), reduction)


def _normalizer(inputs, opts):
    shape = np.shape(inputs[0])
    return np.ones(shape), np.ones(shape)


# ---------------------------------------------------------------------------------------------
# samples

#: logits of both signs with the extremes of a saturated discriminator (+-1e4), the hinges'
#: ties (real = 1, fake = -1 exactly), 0, and BCE's cancellation region (+-30)
_EXTREME = np.array([1e4, -1e4, 1.0, -1.0, 0.0, 30.0, -30.0, 2.5])


def _logits(rng, shape, dtype, scale=2.0):
    return (rng.normal(size=shape) * scale).astype(dtype)


def _samples(n_inputs, name):
    def samples(rng, dtype):
        def data(shape):
            return tuple(_logits(rng, shape, dtype) for _ in range(n_inputs))

        for kind in KINDS:
            for red, with_sw in (("mean", False), ("none", True)):
                opts = {"reduction": red, "kind": kind}
                sw = loss_shape_weight(rng, (6,), dtype) if with_sw else None
                yield Sample(case_id(f"{name}", {**opts, "sw": with_sw}), data((6,)), opts, sw)
            # the extremes: +-1e4, the hinge ties, BCE's cancellation; reversed for the fakes
            x = _EXTREME.astype(dtype)
            inputs = (x, x[::-1].copy())[:n_inputs] if n_inputs == 2 else (x,)
            yield Sample(f"{name}[extremes,kind={kind},reduction=none]", inputs,
                         {"reduction": "none", "kind": kind})
            if n_inputs == 2:  # every pairing of the extremes
                r, f = np.meshgrid(_EXTREME, _EXTREME, indexing="ij")
                yield Sample(f"{name}[extremes-grid,kind={kind},reduction=sum]",
                             (r.astype(dtype), f.astype(dtype)), {"reduction": "sum",
                                                                  "kind": kind})
        for red in ("sum", "sum_over_batch_size"):
            yield Sample(f"{name}[2d,reduction={red}]", data((3, 4)), {"reduction": red},
                         loss_shape_weight(rng, (3, 1), dtype))
        yield Sample(f"{name}[0d,kind=hinge]", data(()), {"kind": "hinge"})
        # inf and NaN logits: where the formula gives NaN, torch gives NaN
        inf, nan = np.inf, np.nan
        x = np.array([inf, -inf, nan, 1.0], dtype)
        for kind in KINDS:
            inputs = (x, x[[1, 0, 3, 2]].copy()) if n_inputs == 2 else (x,)
            yield Sample(f"{name}[inf-nan,kind={kind}]", inputs,
                         {"reduction": "none", "kind": kind})
        # empty batches and all-zero sample weights
        empty = tuple(np.zeros((0,), dtype) for _ in range(n_inputs))
        for red in ("mean", "sum", "sum_over_batch_size"):
            yield Sample(f"{name}[empty-batch,reduction={red}]", empty, {"reduction": red})
        for e in ("nan", "zero"):
            yield Sample(f"{name}[zero-sample-weights,empty={e}]", data((4,)),
                         {"empty_reduction": e, "kind": "least_squares"}, np.zeros(4, dtype))

    return samples


def _random(n_inputs, name):
    def random_sample(rng, dtype):
        shape = tuple(int(d) for d in rng.integers(0, 5, size=int(rng.integers(0, 3))))
        inputs = [rng.normal(size=shape) * float(rng.choice([0.5, 3.0, 20.0]))
                  for _ in range(n_inputs)]
        if inputs[0].size and rng.random() < 0.3:  # a hinge tie, a saturated logit
            inputs[0].flat[0] = 1.0 if n_inputs == 2 else -1.0
            inputs[-1].flat[-1] = float(rng.choice([1e4, -1e4, -1.0]))
        opts = {"reduction": str(rng.choice(REDUCTIONS)), "kind": str(rng.choice(KINDS))}
        if rng.random() < 0.3:
            opts["empty_reduction"] = "zero"
        sw = loss_shape_weight(rng, shape, dtype) if rng.random() < 0.5 else None
        return Sample(case_id(f"{name}[random]", opts),
                      tuple(x.astype(dtype) for x in inputs), opts, sw)

    return random_sample


# ---------------------------------------------------------------------------------------------
# specs

_FORMULA_D = (
    "per element, r = real_logits, f = fake_logits (the discriminator's raw outputs):\n"
    "nonsaturating, minimax: l = BCE(r, 1) + BCE(f, 0) = -log sigmoid(r) - log(1 - sigmoid(f))\n"
    "    (BCE(x, t) = (1 - t) x - log_sigmoid(x), torch's binary_cross_entropy_with_logits)\n"
    "hinge:         l = relu(1 - r) + relu(1 + f)   (relu' = 0 at the tie, as torch)\n"
    "wasserstein:   l = f - r\n"
    "least_squares: l = 0.5 (r - 1)^2 + 0.5 f^2\n"
    "'mean' = mean over elements = mean of the real term + mean of the fake term."
)

_FORMULA_G = (
    "per element, f = fake_logits (the discriminator's raw outputs on generated samples):\n"
    "nonsaturating: l = BCE(f, 1) = -log sigmoid(f)\n"
    "minimax:       l = -BCE(f, 0) = log(1 - sigmoid(f))  (Goodfellow's min-max objective)\n"
    "hinge:         l = -f\n"
    "wasserstein:   l = -f\n"
    "least_squares: l = 0.5 (f - 1)^2"
)

_REF = ("the papers' formulas transcribed with torch.nn.functional (torch 2.13), "
        "multiloss.losses.generative.reference_{discriminator,generator}_terms: "
        "F.binary_cross_entropy_with_logits (nonsaturating, minimax), F.relu (hinge), "
        "arithmetic (wasserstein, least_squares); 'mean' = .mean(), 'sum' = .sum()")

_NOTES = (
    "No library defines these losses once for all; conventions differ: the discriminator's "
    "two terms are summed here (the DCGAN tutorial's errD_real + errD_fake; some code halves "
    "the sum); LSGAN's 0.5 factors are Mao et al.'s (TF-GAN keeps them, some code drops "
    "them); wasserstein is the critic's loss only (weight clipping or a gradient penalty "
    "belong to the training step). The inputs are logits (raw discriminator outputs) for "
    "every kind: no sigmoid is applied by hinge, wasserstein or least_squares. torch's "
    "F.softplus (threshold 20, above which it returns x) is not used: it differs from the "
    "exact log(1 + e^x) by up to 2e-9 absolute."
)

register(LossSpec(
    name="gan_discriminator",
    family=FAMILY,
    summary="GAN discriminator (critic) loss on the logits of real and of generated samples.",
    aliases=("discriminator_loss", "gan_d", "gan_disc"),
    inputs=(
        InputSpec("real_logits", "the discriminator's raw outputs on real samples, any shape"),
        InputSpec("fake_logits", "its raw outputs on generated samples, real_logits' shape"),
    ),
    options=(KIND,),
    formula=_FORMULA_D,
    reference_name=_REF,
    notes=_NOTES,
    check=_check_discriminator,
    samples=_samples(2, "gan_discriminator"),
    random_sample=_random(2, "gan_discriminator"),
    reference=_ref_discriminator,
    normalizer=_normalizer,
))

register(LossSpec(
    name="gan_generator",
    family=FAMILY,
    summary="GAN generator loss on the discriminator's logits of generated samples.",
    aliases=("generator_loss", "gan_g", "gan_gen"),
    inputs=(
        InputSpec("fake_logits", "the discriminator's raw outputs on generated samples, any "
                  "shape"),
    ),
    options=(KIND,),
    formula=_FORMULA_G,
    reference_name=_REF,
    notes=_NOTES + " The generator takes the fake logits only: the relativistic variants "
    "(which also need the real logits) are not among the kinds.",
    check=_check_generator,
    samples=_samples(1, "gan_generator"),
    random_sample=_random(1, "gan_generator"),
    reference=_ref_generator,
    normalizer=_normalizer,
))
