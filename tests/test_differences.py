"""Deliberate differences from a reference stay visible (issue 14, item 6): where multiloss
chooses to differ, the loss's notes say so, and these tests assert the documented behaviour
against the reference's own, so that a change on either side shows.

- Target broadcasting: torch broadcasts an input of another shape (a (N, 1) target against
  (N, D) predictions) and only warns; multiloss raises. Found across the registry by asking
  torch at test time.
- kornia's focal_loss returns a per-class (N, C, *) map for reduction "none"; softmax_focal
  returns its sum over the classes.
- The sample grids' ``contract_reference`` cases (the reference's reduction differs from the
  contract's: torch's mean of an empty batch, torchvision's 0, optax's raise, torch's NaN
  gradient of zero class weights): each such loss's notes name the case.
- The dtype differences of tests/test_torch_dtypes.py (int32 class indices, no CPU half
  kernel, uint8 wrap-around, mixed-float promotion) are asserted there; their notes here.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import multiloss
from multiloss import testing

TORCH_SPECS = [s for s in testing.all_specs()
               if s.reference_name.startswith("torch.nn.functional")]


def _base(spec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        grid = [s for s in testing.samples_for(spec, "float64")
                if s.sample_weight is None and not s.contract_reference
                and all(np.asarray(x).size for x in s.inputs)
                and np.ndim(s.inputs[0]) == 2 and np.shape(s.inputs[0])[-1] > 1]
    return grid[0] if grid else None


def _narrowed(spec, sample):
    """(input index, the sample's inputs with that input cut to (N, 1)) for each input of the
    first input's shape (N, D) but the first."""
    shape = np.shape(sample.inputs[0])
    for i in range(1, len(spec.inputs)):
        if np.shape(sample.inputs[i]) == shape:
            inputs = list(sample.inputs)
            inputs[i] = np.ascontiguousarray(np.asarray(inputs[i])[:, :1])
            yield i, inputs


@pytest.mark.parametrize("spec", [s for s in TORCH_SPECS if _base(s) is not None],
                         ids=lambda s: s.name)
def test_broadcasting_torch_warns_about_raises_and_is_documented(spec):
    """Where torch broadcasts an (N, 1) input against (N, D) ones: multiloss raises (both
    backends) and its notes say so, or it broadcasts as torch, with torch's number."""
    sample = _base(spec)
    for i, inputs in _narrowed(spec, sample):
        tensors = [torch.from_numpy(np.array(x)) for x in inputs]
        opts = testing._reference_options(torch, spec, sample, torch.float64)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                spec.reference(torch, tensors, opts, opts["reduction"])
            except (RuntimeError, ValueError):
                continue  # torch refuses too
        name = spec.inputs[i].name
        ref = spec.reference(torch, tensors, opts, opts["reduction"])
        raised = []
        for backend in ("jax", "torch"):
            loss = multiloss.get(spec.name, backend, **sample.options)
            try:
                out = loss(*(inputs if backend == "jax" else tensors))
            except ValueError as e:
                assert str(e).startswith(f"{name}: expected"), str(e)
                raised.append(backend)
                continue
            # multiloss broadcasts as torch (gaussian_nll's target and var): torch's number
            got = np.asarray(out.detach() if backend == "torch" else out)
            assert testing.rel_error(got, ref.detach().numpy()) <= 1e-12, (spec.name, backend)
        assert raised in ([], ["jax", "torch"]), (spec.name, raised)
        if not raised:
            continue
        assert "broadcast" in spec.notes, (
            f"{spec.name}: torch broadcasts {name} of shape {tuple(tensors[i].shape)} "
            f"({'with a warning' if caught else 'silently'}); multiloss raises, and its notes "
            f"must say so")


def test_broadcasting_is_checked_on_enough_losses():
    checked = [s.name for s in TORCH_SPECS if _base(s) is not None
               and any(True for _ in _narrowed(s, _base(s)))]
    assert {"mse", "l1", "smooth_l1", "huber", "binary_cross_entropy"} <= set(checked)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_softmax_focal_none_sums_kornias_per_class_map(backend):
    from kornia.losses import focal_loss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 2))
    t = np.array([[0, 2], [1, 1], [2, 0], [0, 1]])
    ref = focal_loss(torch.from_numpy(x), torch.from_numpy(t), alpha=0.25, gamma=2.0,
                     reduction="none")
    assert tuple(ref.shape) == (4, 3, 2)  # kornia: (N, C, *), the target's slice, 0 elsewhere
    loss = multiloss.get("softmax_focal", backend, alpha=0.25, gamma=2.0, reduction="none")
    out = loss(*((x, t) if backend == "jax" else (torch.from_numpy(x), torch.from_numpy(t))))
    assert tuple(out.shape) == (4, 2)
    np.testing.assert_allclose(np.asarray(out.detach() if backend == "torch" else out),
                               ref.sum(1).numpy(), rtol=1e-12)
    assert "(N, C, *) map" in multiloss.info("softmax_focal")["notes"]


#: the losses whose sample grids hold contract_reference cases, and the words of their notes
#: that describe the difference
CONTRACT_CASES = {
    # the NaN gradient of zero class weights: docs/weighting.md §3, the contract's own page
    "cross_entropy": None, "nll": None, "linear_cross_entropy": None,
    "mse": "sums to 0", "l1": "sums to 0", "huber": "sums to 0",
    "contrastive": "'nan' gives NaN",
    "lovasz": "per_image mean of an empty batch",
    "multi_margin": "empty batch",
    "multilabel_margin": "empty batch",
    "ntxent": "empty batch",
    "supcon": "'zero'",
    "iou": "empty batch", "giou": "empty batch", "diou": "empty batch", "ciou": "empty batch",
    "kto": "nanmean",
    # the references' 0 for a mean over nothing, where the contract's 'nan' is asked for
    **dict.fromkeys(("generalized_jsd", "forward_kl", "reverse_kl", "symmetric_kl", "tvd"),
                    "empty_reduction='zero'"),
}


@pytest.mark.parametrize("spec", [s for s in testing.all_specs() if s.family != "keras"],
                         ids=lambda s: s.name)
def test_contract_reference_cases_are_documented(spec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cases = [s.id for s in testing.samples_for(spec, "float64") if s.contract_reference]
    if not cases:
        assert spec.name not in CONTRACT_CASES
        return
    assert spec.name in CONTRACT_CASES, (spec.name, cases)
    words = CONTRACT_CASES[spec.name]
    if words is None:  # documented in docs/weighting.md, the contract's own page
        return
    assert words in spec.notes, (spec.name, words, cases)


@pytest.mark.parametrize("name,words", [
    ("cross_entropy", "int32"), ("nll", "int32"), ("linear_cross_entropy", "int32"),
    ("multi_margin", "any integer dtype"), ("multilabel_margin", "any integer dtype"),
    ("ctc", "no CPU kernel"), ("multi_margin", "no CPU kernel"),
    ("multilabel_margin", "no CPU kernel"),
    ("hinge_embedding", "uint8"), ("margin_ranking", "uint8"), ("cosine_embedding", "uint8"),
    ("huber", "common dtype"), ("soft_margin", "common dtype"),
    ("hinge_embedding", "common dtype"), ("cosine_embedding", "common dtype"),
    ("binary_cross_entropy", "one floating dtype"),
    ("giou", "_upcast_non_float"),
])
def test_dtype_differences_are_in_the_notes(name, words):
    """The behaviour is asserted against torch in tests/test_torch_dtypes.py and
    tests/test_mixed_precision.py; here, that the notes say it."""
    assert words in multiloss.info(name)["notes"]
