"""The preference losses (dpo, cpo, simpo, orpo, kto) beyond the registry-wide tests (which run
their grids against TRL 1.16 on both backends): the rewards helper against the rewards TRL
logs, option and input errors, the sorting loss types' batch coupling, KTO's nanmean, and
(``MULTILOSS_LONG=1``) every loss type alone against TRL in float64, values and gradients."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import multiloss
from multiloss import testing
from multiloss._registry import Sample, resolve
from multiloss.losses import preference as P

LONG = os.environ.get("MULTILOSS_LONG") == "1"

pytest.importorskip("trl")


def _pairs(n=5, seed=0):
    rng = np.random.default_rng(seed)
    c, r = -rng.uniform(2, 30, n), -rng.uniform(2, 30, n)
    return c, r, c + rng.normal(size=n), r + rng.normal(size=n)


def _to(backend, x):
    return torch.from_numpy(np.asarray(x)) if backend == "torch" else np.asarray(x)


def _np(x):
    return np.asarray(x.detach() if isinstance(x, torch.Tensor) else x)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_rewards_are_the_rewards_trl_logs(backend):
    testing.enable_x64()
    T = torch.from_numpy
    c, r, rc, rr = _pairs()
    # dpo: DPOTrainer's metrics rewards/chosen, rewards/rejected, rewards/margins
    loss = multiloss.get("dpo", backend, beta=0.3, loss_type="ipo")
    metrics = P._metrics()
    P.dpo_reference_terms(torch, tuple(map(T, (c, r, rc, rr))), loss.options, metrics)
    ch, rj = multiloss.preference_rewards(loss, *(_to(backend, x) for x in (c, r, rc, rr)))
    logged = metrics["train"]
    np.testing.assert_allclose(_np(ch).mean(), logged["rewards/chosen"][-1], rtol=1e-14)
    np.testing.assert_allclose(_np(rj).mean(), logged["rewards/rejected"][-1], rtol=1e-14)
    np.testing.assert_allclose((_np(ch) - _np(rj)).mean(), logged["rewards/margins"][-1],
                               rtol=1e-13)
    # cpo (AlphaPO's rewards) and orpo: the rewards their loss methods return
    from trl.experimental.cpo.cpo_trainer import CPOTrainer
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    ca, ra = c / 20, r / 20
    for name, opts in (("cpo", {"alpha": 0.25, "beta": 0.7}), ("simpo", {"beta": 2.0})):
        loss = multiloss.get(name, backend, **opts)
        inputs = (ca, ra, ca * 0) if name == "cpo" else (ca, ra)
        ours = multiloss.preference_rewards(loss, *(_to(backend, x) for x in inputs))
        self = P._cpo_self(torch, loss.options, "simpo", "cpu")
        ref = CPOTrainer.cpo_loss(self, T(ca), T(ra))[1:]
        for a, b in zip(ours, ref):
            np.testing.assert_allclose(_np(a), b.numpy(), rtol=1e-14)
    loss = multiloss.get("orpo", backend, beta=0.4)
    ours = multiloss.preference_rewards(loss, chosen_logps=_to(backend, ca),
                                        rejected_logps=_to(backend, ra),
                                        chosen_nll=_to(backend, ca * 0))
    self = P.SimpleNamespace(beta=0.4, accelerator=P._accelerator("cpu"))
    ref = ORPOTrainer.odds_ratio_loss(self, T(ca), T(ra))[1:3]
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(_np(a), b.numpy(), rtol=1e-6)  # TRL's .float(): float32
    # kto: the desirable and undesirable examples' rewards (TRL: nansum / count of each)
    labels = np.array([True, False, True, False, False])
    loss = multiloss.get("kto", backend, beta=0.2)
    metrics = P._metrics()
    inputs = (c, rc, labels, np.asarray(0.4))
    P.kto_reference_terms(torch, tuple(map(T, inputs)), loss.options, metrics)
    ch, rj = multiloss.preference_rewards(loss, *(_to(backend, x) for x in inputs))
    np.testing.assert_allclose(np.nanmean(_np(ch)), metrics["train"]["rewards/chosen"][-1],
                               rtol=1e-14)
    np.testing.assert_allclose(np.nanmean(_np(rj)), metrics["train"]["rewards/rejected"][-1],
                               rtol=1e-14)
    assert np.isnan(_np(ch)[~labels]).all() and np.isnan(_np(rj)[labels]).all()


def test_rewards_carry_no_gradient():
    import jax

    testing.enable_x64()
    c, r, rc, rr = _pairs()
    loss = multiloss.get("dpo", "jax")
    g = jax.grad(lambda x: multiloss.preference_rewards(loss, x, r, rc, rr)[0].sum())(c)
    assert np.all(np.asarray(g) == 0)
    t = torch.tensor(c, requires_grad=True)
    ch, _ = multiloss.preference_rewards(multiloss.get("dpo", "torch"), t, *map(torch.tensor,
                                                                              (r, rc, rr)))
    assert not ch.requires_grad
    with pytest.raises(TypeError, match="preference loss"):
        multiloss.preference_rewards(multiloss.get("mse", "torch"), t, t)


@pytest.mark.parametrize("name,options,error,words", [
    ("dpo", {"loss_type": "sft"}, ValueError, "chosen tokens' NLL"),
    ("dpo", {"loss_type": "aot_pair"}, ValueError, "loss_type: expected one of"),
    ("dpo", {"loss_type": ["sigmoid", "sigmoid"]}, ValueError, "at most once"),
    ("dpo", {"loss_type": []}, TypeError, "non-empty list"),
    ("dpo", {"loss_type": ["sigmoid", "hinge"], "loss_weights": [1.0]}, ValueError,
     "one weight per loss type"),
    ("dpo", {"loss_type": "ipo", "beta": 0.0}, ValueError, "divides by beta"),
    ("dpo", {"loss_type": "sppo_hard", "beta": 0.0}, ValueError, "divides by beta"),
    ("dpo", {"beta": -0.1}, ValueError, "beta: expected a value in [0.0"),
    ("dpo", {"loss_type": "robust", "label_smoothing": 0.5}, ValueError, "[0, 0.5)"),
    ("dpo", {"loss_type": "exo_pair"}, ValueError, "log(label_smoothing)"),
    ("dpo", {"f_divergence_type": "forward_kl", "loss_type": "bco_pair"}, ValueError,
     "only with loss types"),
    ("dpo", {"f_divergence_type": "js_divergence", "loss_type": "ipo"}, ValueError,
     "length-averaged"),
    ("dpo", {"f_divergence_type": "alpha_divergence"}, ValueError, "f_divergence_type"),
    ("dpo", {"discopop_tau": 0.0}, ValueError, "discopop_tau"),
    ("dpo", {"label_smoothing": 1.5}, ValueError, "label_smoothing"),
    ("cpo", {"loss_type": "simpo", "beta": 0.0}, ValueError, "divides by beta"),
    ("cpo", {"loss_type": "alphapo"}, ValueError, "loss_type"),
    ("simpo", {"beta": 0.0}, ValueError, "divides by beta"),
    ("kto", {"loss_type": "bco"}, ValueError, "loss_type"),
    ("kto", {"desirable_weight": -1.0}, ValueError, "desirable_weight"),
])
def test_option_errors(name, options, error, words):
    with pytest.raises(error, match=None) as e:
        multiloss.get(name, "torch", **options)
    assert words in str(e.value), str(e.value)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_input_errors(backend):
    c, r, rc, rr = _pairs()
    dpo = multiloss.get("dpo", backend)
    with pytest.raises(ValueError, match="ref_rejected_logps: expected the shape"):
        dpo(*(_to(backend, x) for x in (c, r, rc, rr[:3])))
    with pytest.raises(ValueError, match=r"chosen_logps: expected shape \(N,\)"):
        dpo(*(_to(backend, x[None]) for x in (c, r, rc, rr)))
    with pytest.raises(TypeError, match="rejected_logps: expected a floating"):
        dpo(*(_to(backend, x) for x in (c, r.astype(np.int64), rc, rr)))
    kto = multiloss.get("kto", backend)
    labels = np.array([1, 0, 2, 1, 0])
    with pytest.raises(ValueError, match="labels: expected 0 or 1"):
        kto(*(_to(backend, x) for x in (c, rc, labels, np.asarray(0.1))))
    with pytest.raises(ValueError, match="kl: expected a scalar"):
        kto(*(_to(backend, x) for x in (c, rc, labels > 0, np.zeros(5))))
    with pytest.raises(TypeError, match="labels: expected a bool"):
        kto(*(_to(backend, x) for x in (c, rc, labels * 1.0, np.asarray(0.1))))


def test_sorting_loss_types_couple_the_batch():
    assert resolve("dpo").coupled(resolve("dpo").bind({"loss_type": ["sigmoid", "aot"]}))
    assert not resolve("dpo").coupled(resolve("dpo").bind({"loss_type": "sigmoid"}))
    with pytest.raises(ValueError, match="couples the rows"):
        multiloss.get("dpo", "jax", loss_type="aot_unpaired", axis_name="data")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_kto_mean_propagates_nan_where_trl_takes_a_nanmean(backend):
    testing.enable_x64()
    x = (np.array([-3.0, np.nan, -2.0]), np.array([-1.0, -1.0, -4.0]),
         np.array([True, False, False]), np.asarray(0.2))
    per_example, trl_loss = P.kto_reference_terms(torch, tuple(map(torch.from_numpy, x)),
                                                  resolve("kto").bind({}))
    none = _np(multiloss.get("kto", backend, reduction="none")(*(_to(backend, v) for v in x)))
    np.testing.assert_allclose(none, per_example.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(np.nanmean(none), float(trl_loss), rtol=1e-14)
    assert np.isnan(_np(multiloss.get("kto", backend)(*(_to(backend, v) for v in x))))


def _alone_cases():
    """Every loss type alone, with its options, on random pairs: (loss, options)."""
    cases = [("dpo", {"loss_type": t, "label_smoothing": 0.1 if t != "exo_pair" else 1e-3})
             for t in P.DPO_LOSS_TYPES]
    cases += [("dpo", {"loss_type": t, "f_divergence_type": f})
              for f in P.F_DIVERGENCES[1:] for t in ("sigmoid", "hinge", "robust", "discopop")]
    cases += [("cpo", {"loss_type": t, "label_smoothing": 0.1}) for t in P.CPO_LOSS_TYPES]
    cases += [("kto", {"loss_type": t, "undesirable_weight": 0.6}) for t in P.KTO_LOSS_TYPES]
    return cases


@pytest.mark.skipif(not LONG, reason="exhaustive: MULTILOSS_LONG=1")
@pytest.mark.parametrize("name,options", _alone_cases(),
                         ids=lambda v: v if isinstance(v, str) else ",".join(map(str, v.values())))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_loss_type_alone_against_trl(name, options, dtype):
    if dtype == "float64":
        testing.enable_x64()
    rng = np.random.default_rng(7)
    n = 7
    c, r, rc, rr = _pairs(n, seed=3)
    if name == "dpo":
        inputs = (c, r, rc, rr)
    elif name == "cpo":
        inputs = (c / 20, r / 20, rng.uniform(0.5, 2.0, n))
    else:
        inputs = (c, rc, rng.random(n) < 0.5, np.asarray(0.3))
    inputs = tuple(x.astype(dtype) if x.dtype.kind == "f" else x for x in inputs)
    for red in ("none", "mean"):
        sample = Sample(f"{name}[alone]", inputs, {**options, "reduction": red},
                        None if red == "mean" else rng.uniform(0, 2, n).astype(dtype))
        result = testing.compare(resolve(name), sample, dtype)
        assert result.ok, (result.errors, result.message)


def test_liger_kernel_chunked_losses_as_the_docs_say():
    """docs/post-training.md's table: Liger-Kernel 0.8.5's plain-torch preference functions
    (liger_kernel.chunked_loss, run on CPU) give TRL's numbers, except ORPO near logp = 0."""
    cl = pytest.importorskip("liger_kernel.chunked_loss")
    from liger_kernel.chunked_loss import cpo_loss, dpo_loss, kto_loss, orpo_loss, simpo_loss

    del cl
    T = torch.from_numpy
    c, r, rc, rr = _pairs(8)
    full = torch.zeros(16, 3)

    def ours(name, *x, **o):
        return float(multiloss.get(name, "torch", **o)(*map(T, x)))

    dpo = dpo_loss.LigerFusedLinearDPOFunction.preference_loss_fn
    eps = dpo(T(c), T(r), full, T(rc), T(rr), loss_type="exo_pair", label_smoothing=0.1)[0]
    # exo_pair's epsilon is made in torch's default dtype (as TRL's): float64 needs it set
    assert abs(float(eps) / ours("dpo", c, r, rc, rr, loss_type="exo_pair",
                                 label_smoothing=0.1) - 1) > 1e-9
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        exo = float(dpo(T(c), T(r), full, T(rc), T(rr), loss_type="exo_pair",
                        label_smoothing=0.1)[0])
    finally:
        torch.set_default_dtype(old)
    assert exo == pytest.approx(ours("dpo", c, r, rc, rr, loss_type="exo_pair",
                                     label_smoothing=0.1), rel=1e-14)
    for t in ("sigmoid", "hinge", "nca_pair", "robust", "bco_pair", "sppo_hard",
              "apo_zero", "apo_down", "discopop"):
        ls = 0.1 if t in ("robust", "exo_pair") else 0.0
        liger = float(dpo(T(c), T(r), full, T(rc), T(rr), beta=0.1, loss_type=t,
                          label_smoothing=ls)[0])
        assert liger == pytest.approx(ours("dpo", c, r, rc, rr, loss_type=t,
                                           label_smoothing=ls), rel=1e-14), t
    ca, ra = c / 20, r / 20
    liger = float(cpo_loss.LigerFusedLinearCPOFunction.preference_loss_fn(
        T(ca), T(ra), full, beta=0.1, label_smoothing=0.1)[0])
    assert liger == pytest.approx(ours("cpo", ca, ra, ca * 0, label_smoothing=0.1,
                                       cpo_alpha=0.0), rel=1e-14)
    liger = float(simpo_loss.LigerFusedLinearSimPOFunction.preference_loss_fn(
        T(ca), T(ra), full, beta=2.0, gamma=0.5)[0])
    assert liger == pytest.approx(ours("simpo", ca, ra, beta=2.0), rel=1e-14)
    labels = np.array([True, False] * 4)
    liger = float(kto_loss.LigerFusedLinearKTOFunction.preference_loss_fn(
        T(c), T(labels), torch.zeros(8, 3), T(rc), beta=0.1, kl=torch.tensor(0.3))[0])
    assert liger == pytest.approx(ours("kto", c, rc, labels, np.asarray(0.3)), rel=1e-14)
    orpo = orpo_loss.LigerFusedLinearORPOFunction.preference_loss_fn
    near = (np.array([-1e-9, -1e-12, -3e-8, -0.5]), np.array([-2.0, -1e-7, -1.0, -1e-10]))
    liger = float(orpo(*map(T, near), torch.zeros(8, 3), beta=0.1)[0])
    err = abs(liger - ours("orpo", *near, near[0] * 0)) / abs(liger)
    assert 1e-10 < err < 1e-7  # Liger's log1p(-exp(x)) loses digits near 0; TRL's does not
