"""The registry of optimizer specs: the one place that defines an optimizer's name, aliases,
torch class, hyperparameters (torch's names, torch's defaults, torch's validation), update
formula, the optax building blocks that come closest and how the same-named optax function
differs.

Nothing here imports torch or jax. ``multiloss.optim._jax`` turns a spec plus bound
hyperparameters into an ``optax.GradientTransformation``; ``multiloss.optim._torch`` into the
``torch.optim`` optimizer.
"""

from __future__ import annotations

import difflib
import numbers
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._registry import Option, boolean, integer, real

__all__ = ["OptimizerSpec", "available", "info", "resolve", "specs"]

# --------------------------------------------------------------------------------------------
# validators (multiloss._registry's real / integer / boolean, plus the few torch needs here)

nonneg = real(0.0)


def betas_check(name, value):
    """torch's ``betas``: a pair of reals, each in [0, 1)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise TypeError(f"{name}: expected a pair (beta1, beta2), got {type(value).__name__} {value!r}")
    check = real(0.0, 1.0, hi_open=True)
    return (check(f"{name}[0]", value[0]), check(f"{name}[1]", value[1]))


def not_below(lo=None):
    """A real number that torch accepts as its ``if value < lo: raise`` check does: NaN passes
    (torch.optim.SGD takes lr, momentum, weight_decay = NaN; LBFGS checks nothing), and so
    does +-inf where not below ``lo``."""

    def check(name, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name}: expected a real number, got {type(value).__name__} "
                            f"{value!r}")
        v = float(value)
        if lo is not None and v < lo:
            raise ValueError(f"{name}: expected a value in [{lo}, inf], got {value!r}")
        return v

    return check


def optional_bool(name, value):
    if value is None:
        return None
    return boolean(name, value)


def positive_int(name, value):
    v = integer(name, value)
    if v < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return v


def optional_positive_int(name, value):
    return None if value is None else positive_int(name, value)


def line_search(name, value):
    if value not in (None, "strong_wolfe"):
        raise ValueError(f"{name}: expected one of [None, 'strong_wolfe'], got {value!r}")
    return value


def dtype_name(name, value):
    v = getattr(value, "__name__", None) or str(value)
    v = v.replace("torch.", "")
    if v not in ("float32", "float64"):
        raise ValueError(f"{name}: expected one of ['float32', 'float64'], got {value!r}")
    return v


# --------------------------------------------------------------------------------------------
# options shared by several optimizers

def _lr(default):
    return Option("lr", default, "learning rate (a schedule scales it, see multiloss.optim.schedules)",
                  nonneg, allowed=">= 0")


WEIGHT_DECAY = Option("weight_decay", 0.0, "L2 penalty added to the gradient: g + weight_decay * p",
                      nonneg, allowed=">= 0")
MAXIMIZE = Option("maximize", False, "maximize the objective: the gradient is negated first",
                  boolean)
EPS8 = Option("eps", 1e-8, "added to the denominator", nonneg, allowed=">= 0")
BETAS = Option("betas", (0.9, 0.999), "coefficients of the running averages of the gradient "
               "and of its square", betas_check, allowed="each in [0, 1)")
DECOUPLED = Option("decoupled_weight_decay", False, "decoupled (AdamW-style) decay: "
                   "p <- p * (1 - lr * weight_decay) before the update, instead of L2 in the "
                   "gradient", boolean)

#: torch implementation options: they choose a kernel (for-loop, foreach, fused), not the
#: numbers. Accepted on both backends (so torch keyword arguments port unchanged), ignored on JAX.
FOREACH = Option("foreach", None, "torch kernel choice; no effect on JAX", optional_bool,
                 allowed="None | bool")
FUSED = Option("fused", None, "torch kernel choice; no effect on JAX", optional_bool,
               allowed="None | bool")
CAPTURABLE = Option("capturable", False, "torch CUDA-graph option; no effect on JAX", boolean)
DIFFERENTIABLE = Option("differentiable", False, "torch autograd-through-step option; no "
                        "effect on JAX", boolean)
TORCH_ONLY = ("foreach", "fused", "capturable", "differentiable")


@dataclass(frozen=True)
class OptimizerSpec:
    """Everything multiloss knows about one optimizer, shared by both backends.

    options        torch's constructor keywords after ``params``, with torch's defaults and a
                   validator raising TypeError / ValueError naming the keyword.
    jax_options    options only the JAX backend has (e.g. NAdam's ``mu_product_dtype``).
    momentum_key   what OneCycleLR's momentum cycling sets: "betas" (beta1), "momentum", or
                   None (torch raises when cycling momentum on such an optimizer).
    buffers        torch's per-parameter state keys (also the JAX state's field names).
    check          cross-option validation (e.g. SGD's nesterov rule), on the bound dict.
    optax          the optax building blocks that reproduce it, for the docs.
    differences    (what differs in the same-named optax function, measured effect) pairs.
    """

    name: str
    torch_class: str
    summary: str
    options: tuple
    formula: str
    optax: str
    differences: tuple = ()
    aliases: tuple = ()
    jax_options: tuple = ()
    momentum_key: str | None = None
    buffers: tuple = ()
    check: Callable[[dict], None] | None = None
    supports_groups: bool = True
    notes: str = ""
    _option_map: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        self._option_map.update({o.name: o for o in (*self.options, *self.jax_options)})

    @property
    def hyperparameters(self) -> tuple:
        """The options that change the numbers (torch's kernel-choice options excluded)."""
        return tuple(o.name for o in self.options if o.name not in TORCH_ONLY)

    def bind(self, options: Mapping[str, Any], backend: str = "jax", partial: bool = False) -> dict:
        """Validate ``options`` and fill in torch's defaults (``partial``: only the given ones,
        for a parameter group's overrides). Returns a new dict."""
        valid = self.options if backend == "torch" else (*self.options, *self.jax_options)
        names = {o.name for o in valid}
        unknown = [k for k in options if k not in names]
        if unknown:
            close = sorted({c for k in unknown for c in difflib.get_close_matches(k, names, n=2)})
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise TypeError(
                f"{self.name}: unknown hyperparameter(s) {', '.join(map(repr, unknown))}{hint}; "
                f"valid ones are: {', '.join(o.name for o in valid)}"
            )
        bound = {}
        for opt in valid:
            if partial and opt.name not in options:
                continue
            try:
                bound[opt.name] = opt.bind(options.get(opt.name, opt.default))
            except (TypeError, ValueError) as e:
                raise type(e)(f"{self.name}: {e}") from None
        if self.check is not None and not partial:
            self.check(bound)
        return bound

    def doc(self) -> str:
        lines = [f"{self.name}: {self.summary}", "", f"torch: torch.optim.{self.torch_class}", "",
                 "Hyperparameters (torch's names and defaults):"]
        for o in self.options:
            allowed = f" [{o.allowed}]" if o.allowed else ""
            lines.append(f"    {o.name}={o.default!r}{allowed}: {o.doc}")
        for o in self.jax_options:
            lines.append(f"    {o.name}={o.default!r} (JAX only): {o.doc}")
        lines += ["", "Update (torch's, over all parameters flattened):" if not self.supports_groups
                  else "Update (torch's, per parameter with a gradient; t counts that "
                  "parameter's steps):"]
        lines += [f"    {ln}" for ln in self.formula.strip().splitlines()]
        lines += ["", f"optax building blocks: {self.optax}"]
        if self.differences:
            lines += ["", "Differences from the same-named optax function:"]
            lines += [f"    - {what} ({effect})" for what, effect in self.differences]
        if self.notes:
            lines += ["", self.notes]
        lines += ["", "Mapping table and measured differences: docs/optim.md"]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# cross-option checks (torch's)


def _sgd_check(b):
    if b["nesterov"] and (b["momentum"] <= 0 or b["dampening"] != 0):
        raise ValueError(
            f"sgd: nesterov: Nesterov momentum requires a momentum > 0 and zero dampening, got "
            f"momentum={b['momentum']!r}, dampening={b['dampening']!r}"
        )


def _lbfgs_check(b):
    if b["max_eval"] is None:
        b["max_eval"] = b["max_iter"] * 5 // 4


# --------------------------------------------------------------------------------------------
# the specs

_SPECS: dict[str, OptimizerSpec] = {}
_NAMES: dict[str, str] = {}


def _norm(name: str) -> str:
    return re.sub(r"[_\-\s]", "", name).lower()


def register(spec: OptimizerSpec) -> OptimizerSpec:
    for n in (spec.name, spec.torch_class, *spec.aliases):
        for key in {n, _norm(n)}:
            if _NAMES.get(key, spec.name) != spec.name:
                raise ValueError(f"name {n!r} of {spec.name!r} is taken by {_NAMES[key]!r}")
            _NAMES[key] = spec.name
    _SPECS[spec.name] = spec
    return spec


register(OptimizerSpec(
    name="sgd", torch_class="SGD",
    summary="stochastic gradient descent with (Nesterov) momentum, dampening and L2 weight decay",
    options=(
        # torch.optim.SGD checks `value < 0` only: NaN is accepted, and dampening is unchecked
        Option("lr", 1e-3, "learning rate (a schedule scales it, see multiloss.optim.schedules)",
               not_below(0.0), allowed=">= 0 (or NaN)"),
        Option("momentum", 0.0, "momentum factor", not_below(0.0), allowed=">= 0 (or NaN)"),
        Option("dampening", 0.0, "dampening of the gradient in the momentum buffer",
               not_below()),
        Option("weight_decay", 0.0, "L2 penalty added to the gradient: g + weight_decay * p",
               not_below(0.0), allowed=">= 0 (or NaN)"),
        Option("nesterov", False, "Nesterov momentum (needs momentum > 0, dampening = 0)", boolean),
        MAXIMIZE, FOREACH, DIFFERENTIABLE, FUSED,
    ),
    formula="""
g = -grad if maximize else grad
g = g + weight_decay * p                          if weight_decay != 0
b = g (first step)  |  b = momentum * b + (1 - dampening) * g          if momentum != 0
g = g + momentum * b if nesterov else b                                if momentum != 0
p = p - lr * g
""",
    optax="add_decayed_weights(wd) -> trace(momentum, nesterov) -> scale(-lr); no dampening block",
    differences=(
        ("optax.sgd has no dampening (torch: b = momentum b + (1 - dampening) g after a first "
         "b = g; optax's trace equals it when dampening = 0)", "dampening"),
        ("optax.sgd has no weight_decay; torch adds it to the gradient before momentum",
         "weight_decay"),
        ("no maximize in optax", "maximize"),
    ),
    momentum_key="momentum", buffers=("momentum_buffer",), check=_sgd_check,
))

_ADAM_FORMULA = """
g = -grad if maximize else grad
p = p * (1 - lr * weight_decay)                   if decoupled  (AdamW)
g = g + weight_decay * p                          if not decoupled (L2, torch.optim.Adam)
m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g^2
v_max = max(v_max, v) and v := v_max              if amsgrad (max of the raw v, then corrected)
p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
"""

_ADAM_OPTIONS = (
    _lr(1e-3), BETAS, EPS8, WEIGHT_DECAY,
    Option("amsgrad", False, "AMSGrad: the running max of the second moment", boolean),
    FOREACH, MAXIMIZE, CAPTURABLE, DIFFERENTIABLE, FUSED,
)

register(OptimizerSpec(
    name="adam", torch_class="Adam",
    summary="Adam with L2 weight decay in the gradient (decoupled_weight_decay=True: AdamW)",
    options=(*_ADAM_OPTIONS, DECOUPLED),
    formula=_ADAM_FORMULA,
    optax="add_decayed_weights(wd) -> scale_by_adam(b1, b2, eps) -> scale(-lr) (amsgrad: "
          "scale_by_amsgrad, which differs)",
    differences=(
        ("weight_decay is L2 added to the gradient, not optax.adamw's decoupled decay",
         "weight_decay"),
        ("amsgrad keeps the max of the raw second moment and bias-corrects it; optax.amsgrad "
         "keeps the max of the bias-corrected one", "amsgrad"),
        ("no maximize in optax", "maximize"),
    ),
    momentum_key="betas", buffers=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
))

register(OptimizerSpec(
    name="adamw", torch_class="AdamW",
    summary="Adam with decoupled weight decay (torch's default weight_decay is 1e-2)",
    options=tuple(
        Option("weight_decay", 1e-2, "decoupled decay: p <- p * (1 - lr * weight_decay)",
               nonneg, allowed=">= 0") if o.name == "weight_decay" else o
        for o in _ADAM_OPTIONS
    ),
    formula=_ADAM_FORMULA.replace("if decoupled  (AdamW)", "(always)").replace(
        "g = g + weight_decay * p                          if not decoupled (L2, torch.optim.Adam)\n", ""),
    optax="scale_by_adam(b1, b2, eps) -> add_decayed_weights(wd) -> scale(-lr) (= optax.adamw "
          "with weight_decay=1e-2)",
    differences=(
        ("torch's default weight_decay is 1e-2, optax.adamw's 1e-4", "defaults"),
        ("amsgrad as torch.optim.Adam", "amsgrad"),
    ),
    momentum_key="betas", buffers=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
))

register(OptimizerSpec(
    name="rmsprop", torch_class="RMSprop",
    summary="RMSprop: eps outside the square root, alpha=0.99, momentum applied before the lr",
    options=(
        _lr(1e-2),
        Option("alpha", 0.99, "smoothing constant of the squared-gradient average", nonneg,
               allowed=">= 0"),
        EPS8, WEIGHT_DECAY,
        Option("momentum", 0.0, "momentum factor", nonneg, allowed=">= 0"),
        Option("centered", False, "normalise by the variance estimate", boolean),
        CAPTURABLE, FOREACH, MAXIMIZE, DIFFERENTIABLE,
    ),
    formula="""
g = -grad if maximize else grad;  g = g + weight_decay * p  if weight_decay != 0
v = alpha * v + (1 - alpha) * g^2
a = lerp(a, g, 1 - alpha); avg = sqrt(v - a^2) + eps        if centered
avg = sqrt(v) + eps                                          otherwise
b = momentum * b + g / avg;  p = p - lr * b                  if momentum > 0
p = p - lr * g / avg                                         otherwise
""",
    optax="scale_by_rms(decay=alpha, eps, eps_in_sqrt=False) / scale_by_stddev -> "
          "trace(momentum) -> scale(-lr)",
    differences=(
        ("optax's decay defaults to 0.9, torch's alpha to 0.99", "defaults"),
        ("optax puts eps inside the square root by default (eps_in_sqrt=True)", "eps"),
        ("optax.rmsprop applies momentum after the learning rate (trace of lr * g / avg), "
         "torch before it: equal for a constant lr, different under a schedule", "momentum"),
    ),
    momentum_key="momentum", buffers=("square_avg", "grad_avg", "momentum_buffer"),
))

register(OptimizerSpec(
    name="adagrad", torch_class="Adagrad",
    summary="Adagrad with lr decay, eps outside the square root and initial accumulator 0",
    options=(
        _lr(1e-2),
        Option("lr_decay", 0.0, "lr / (1 + (t - 1) * lr_decay)", nonneg, allowed=">= 0"),
        WEIGHT_DECAY,
        Option("initial_accumulator_value", 0.0, "initial value of the sum of squares",
               nonneg, allowed=">= 0"),
        Option("eps", 1e-10, "added to the denominator", nonneg, allowed=">= 0"),
        FOREACH, MAXIMIZE, DIFFERENTIABLE, FUSED,
    ),
    formula="""
g = -grad if maximize else grad;  g = g + weight_decay * p  if weight_decay != 0
s = s + g^2
p = p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)
""",
    optax="scale_by_rss(initial_accumulator_value=0, eps=0) with eps outside the root "
          "(no exact block) -> scale_by_schedule(lr / (1 + t * lr_decay))",
    differences=(
        ("optax.adagrad's initial accumulator is 0.1 (torch 0) and its eps 1e-7 is inside "
         "the square root (torch 1e-10 outside)", "defaults, eps"),
        ("no lr_decay, weight_decay or maximize in optax.adagrad", "options"),
    ),
    buffers=("sum",),
))

register(OptimizerSpec(
    name="adadelta", torch_class="Adadelta",
    summary="Adadelta with a learning rate (default 1.0)",
    options=(
        _lr(1.0),
        Option("rho", 0.9, "running-average coefficient", real(0.0, 1.0), allowed="[0, 1]"),
        Option("eps", 1e-6, "added inside the square roots", nonneg, allowed=">= 0"),
        WEIGHT_DECAY, FOREACH, CAPTURABLE, MAXIMIZE, DIFFERENTIABLE,
    ),
    formula="""
g = -grad if maximize else grad;  g = g + weight_decay * p  if weight_decay != 0
v = rho * v + (1 - rho) * g^2
delta = sqrt(u + eps) / sqrt(v + eps) * g
u = rho * u + (1 - rho) * delta^2
p = p - lr * delta
""",
    optax="scale_by_adadelta(rho, eps) -> scale(-lr)",
    differences=(
        ("optax.adadelta(learning_rate=None) applies no sign flip: it ascends; pass "
         "learning_rate=1.0 for torch's default", "lr"),
        ("no maximize in optax.adadelta (its weight_decay is L2 in the gradient, as torch's)",
         "maximize"),
    ),
    buffers=("square_avg", "acc_delta"),
))

register(OptimizerSpec(
    name="adamax", torch_class="Adamax",
    summary="Adamax (infinity-norm Adam), eps added to |g| inside the max",
    options=(_lr(2e-3), BETAS, EPS8, WEIGHT_DECAY, FOREACH, MAXIMIZE, DIFFERENTIABLE, CAPTURABLE),
    formula="""
g = -grad if maximize else grad;  g = g + weight_decay * p  if weight_decay != 0
m = lerp(m, g, 1 - beta1);  u = max(beta2 * u, |g| + eps)
p = p - lr / (1 - beta1^t) * m / u
""",
    optax="scale_by_adamax(b1, b2, eps) -> scale(-lr) (= optax.adamax)",
    differences=(
        ("none in the update (optax.adamax also adds eps to |g| inside the max); optax.adamax "
         "has no weight_decay or maximize", "options"),
    ),
    momentum_key="betas", buffers=("exp_avg", "exp_inf"),
))


def _dtype_option():
    return Option(
        "mu_product_dtype", "float32",
        "dtype of the running product of the mu_t. torch keeps it in torch.get_default_dtype() "
        "(float32 unless set), even for float64 parameters; 'float64' mirrors a torch run under "
        "torch.set_default_dtype(torch.float64)", dtype_name, allowed="'float32' | 'float64'")


register(OptimizerSpec(
    name="nadam", torch_class="NAdam",
    summary="NAdam with torch's momentum-decay schedule mu_t",
    options=(
        _lr(2e-3), BETAS, EPS8, WEIGHT_DECAY,
        Option("momentum_decay", 4e-3, "psi in mu_t = beta1 (1 - 0.5 * 0.96^(t psi))", nonneg,
               allowed=">= 0"),
        DECOUPLED, FOREACH, MAXIMIZE, CAPTURABLE, DIFFERENTIABLE,
    ),
    jax_options=(_dtype_option(),),
    formula="""
g = -grad if maximize else grad;  decay as Adam (decoupled_weight_decay)
mu_t = beta1 (1 - 0.5 * 0.96^(t * momentum_decay));  P_t = P_{t-1} * mu_t
m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g^2
d = sqrt(v / (1 - beta2^t)) + eps
p = p - lr (1 - mu_t) / (1 - P_t) * g / d - lr mu_{t+1} / (1 - P_t mu_{t+1}) * m / d
""",
    optax="no optax block: optax.nadam uses a constant beta1 (scale_by_adam(nesterov=True))",
    differences=(
        ("optax.nadam has no mu_t schedule (momentum_decay); its Nesterov term uses constant "
         "beta1", "trajectory"),
    ),
    momentum_key="betas", buffers=("exp_avg", "exp_avg_sq", "mu_product"),
))

register(OptimizerSpec(
    name="radam", torch_class="RAdam",
    summary="Rectified Adam (rectifies when rho_t > 5, eps added to sqrt(v))",
    options=(_lr(1e-3), BETAS, EPS8, WEIGHT_DECAY, DECOUPLED, FOREACH, MAXIMIZE, CAPTURABLE,
             DIFFERENTIABLE),
    formula="""
g = -grad if maximize else grad;  decay as Adam (decoupled_weight_decay)
m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g^2
rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
if rho_t > 5:  p = p - lr * m / (1 - beta1^t) * sqrt(1 - beta2^t) / (sqrt(v) + eps) * r_t,
               r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
else:          p = p - lr * m / (1 - beta1^t)
""",
    optax="scale_by_radam(b1, b2, eps, threshold=5) with eps outside sqrt(v_hat) (differs) -> "
          "scale(-lr)",
    differences=(
        ("optax adds eps to sqrt(v_hat) (bias-corrected), torch to sqrt(v) before the "
         "correction", "eps"),
        ("optax rectifies when rho_t >= threshold, torch when rho_t > 5", "threshold"),
    ),
    momentum_key="betas", buffers=("exp_avg", "exp_avg_sq"),
))

register(OptimizerSpec(
    name="lbfgs", torch_class="LBFGS",
    summary="L-BFGS without line search (torch's fixed-step mode)",
    options=(
        Option("lr", 1.0, "step length (the first step is min(1, 1/|g|_1) * lr)", nonneg,
               allowed=">= 0"),
        Option("max_iter", 20, "iterations per step; > 1 re-evaluates the objective "
               "(JAX: pass value_and_grad_fn to update)", positive_int, allowed="int >= 1"),
        Option("max_eval", None, "evaluations per step (None: max_iter * 5 // 4)",
               optional_positive_int, allowed="None | int >= 1"),
        Option("tolerance_grad", 1e-7, "stop when max|g| <= tolerance_grad", not_below()),
        Option("tolerance_change", 1e-9, "stop on smaller changes of loss or parameters",
               not_below()),
        Option("history_size", 100, "number of (s, y) pairs kept", positive_int,
               allowed="int >= 1"),
        Option("line_search_fn", None, "None (fixed step) or 'strong_wolfe' (torch only)",
               line_search, allowed="None | 'strong_wolfe'"),
    ),
    formula="""
(one inner iteration; max_iter > 1 repeats it at the new point, with torch's stopping rules)
stop (no change) if max|g| <= tolerance_grad
y = g - g_prev, s = t_prev d_prev; if y.s > 1e-10: push (s, y) (history_size), H = y.s / y.y
d = -H0 g by the two-loop recursion (H0 = H)
t = min(1, 1 / |g|_1) * lr on the very first iteration, else lr
p = p + t d  unless g.d > -tolerance_change
""",
    optax="no exact block: optax.lbfgs(linesearch=None) scales its first step by "
          "min(1, 1/|g|_2) and does not skip pairs with y.s <= 1e-10",
    differences=(
        ("first step min(1, 1/|g|_1) * lr (optax: its own scale); pairs with y.s <= 1e-10 are "
         "skipped; no step when g.d > -tolerance_change", "trajectory"),
    ),
    check=_lbfgs_check, supports_groups=False,
    notes=("JAX: line_search_fn='strong_wolfe' is not implemented. max_iter > 1 needs the "
           "objective: tx.update(grads, state, params, value=loss, "
           "value_and_grad_fn=f) with f(params) -> (loss, grads). A parameter without a "
           "gradient counts as a zero gradient, as torch's LBFGS does."),
))


# --------------------------------------------------------------------------------------------
# ASGD, Rprop, SparseAdam (issue 18)


def _etas_check(name, value):
    """Rprop's ``etas``: a pair (etaminus, etaplus) with 0 < etaminus < 1 < etaplus (torch)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise TypeError(f"{name}: expected a pair (etaminus, etaplus), got "
                        f"{type(value).__name__} {value!r}")
    lo, hi = (not_below()(f"{name}[{i}]", v) for i, v in enumerate(value))
    if not 0.0 < lo < 1.0 < hi:
        raise ValueError(f"{name}: expected 0 < etas[0] < 1 < etas[1], got {tuple(value)!r}")
    return (lo, hi)


def _step_sizes_check(name, value):
    """Rprop's ``step_sizes``: a pair (min, max) of reals, unchecked beyond that by torch (a min
    above the max clamps every step size to the max, as torch.clamp does)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise TypeError(f"{name}: expected a pair (min_step, max_step), got "
                        f"{type(value).__name__} {value!r}")
    return tuple(not_below()(f"{name}[{i}]", v) for i, v in enumerate(value))


def _scalar_dtype_option(what):
    return Option(
        "scalar_dtype", "float32",
        f"dtype of {what}. torch keeps it in torch.optim's _get_scalar_dtype(): float32 unless "
        "torch.set_default_dtype(torch.float64), even for float64 parameters; 'float64' mirrors "
        "a torch run under that default", dtype_name, allowed="'float32' | 'float64'")


_positive = real(0.0, lo_open=True)

register(OptimizerSpec(
    name="asgd", torch_class="ASGD",
    summary="averaged SGD (Polyak-Ruppert): a decaying step size eta and a running average ax",
    options=(
        _lr(1e-2),
        # torch checks lr and weight_decay only: lambd, alpha, t0 take any float (NaN too)
        Option("lambd", 1e-4, "decay term: p <- p (1 - lambd eta) and eta's decay rate",
               not_below()),
        Option("alpha", 0.75, "power of eta's decay", not_below()),
        Option("t0", 1e6, "step at which averaging starts (mu = 1 / max(1, t - t0))",
               not_below()),
        WEIGHT_DECAY, FOREACH, MAXIMIZE, DIFFERENTIABLE, CAPTURABLE,
    ),
    jax_options=(_scalar_dtype_option("eta and mu (torch's 0-dim state tensors)"),),
    formula="""
g = -grad if maximize else grad;  g = g + weight_decay * p  if weight_decay != 0
eta = lr on a parameter's first step (then the stored eta; eta and mu are kept in scalar_dtype)
p = p * (1 - lambd * eta);  p = p - eta * g
ax = p if mu == 1 else ax + (p - ax) * mu
eta = lr / (1 + lambd * lr * t) ** alpha;  mu = 1 / max(1, t - t0)
""",
    optax="no optax block (optax has no ASGD); ax is torch's state['ax'], the averaged "
          "parameters, in state.buffers['ax']",
    differences=(("optax has no ASGD", "optimizer"),),
    buffers=("eta", "mu", "ax"),
    notes=("The averaged parameters torch keeps in state['ax'] are state.buffers['ax'] on JAX "
           "(torch never copies them into the parameters; neither does multiloss). eta and mu "
           "are float32 as in torch (scalar_dtype), so a float64 run follows torch only with "
           "that rounding, as NAdam's mu_product."),
))

register(OptimizerSpec(
    name="rprop", torch_class="Rprop",
    summary="resilient backpropagation (Rprop without weight backtracking, torch's variant)",
    options=(
        _lr(1e-2),
        Option("etas", (0.5, 1.2), "(etaminus, etaplus): step-size factors after a sign "
               "change / no change", _etas_check, allowed="0 < etaminus < 1 < etaplus"),
        Option("step_sizes", (1e-6, 50), "(min, max) bounds of the per-entry step size",
               _step_sizes_check, allowed="a pair of reals"),
        CAPTURABLE, FOREACH, MAXIMIZE, DIFFERENTIABLE,
    ),
    formula="""
g = -grad if maximize else grad
step_size = lr (every entry) on a parameter's first step: lr enters only there (a schedule
            changes nothing afterwards, as in torch)
s = sign(g * prev);  f = etaplus if s > 0, etaminus if s < 0, else 1 (torch's CPU sign(NaN)
    is 0: a NaN gradient entry keeps its step size and its parameter)
step_size = clamp(step_size * f, min_step, max_step)
g = 0 where f == etaminus
p = p - sign(g) * step_size;  prev = g
""",
    optax="scale_by_rprop(lr, eta_minus, eta_plus, min_step_size, max_step_size) -> "
          "scale(-1) (= optax.rprop); see the differences",
    differences=(
        ("optax.rprop (0.2.8) returns the previous step's update (its first update is 0: "
         "one step behind torch) and skips the clamp where g * prev == 0 (torch clamps "
         "lr itself on the first step)", "trajectory"),
        ("no maximize in optax", "maximize"),
    ),
    buffers=("prev", "step_size"),
))

register(OptimizerSpec(
    name="sparse_adam", torch_class="SparseAdam", aliases=("sparseadam",),
    summary="Adam on the entries with a gradient only (torch: sparse gradients; JAX: the "
            "nonzero entries of a dense gradient)",
    options=(
        Option("lr", 1e-3, "learning rate (a schedule scales it, see multiloss.optim.schedules)",
               _positive, allowed="> 0"),
        BETAS,
        Option("eps", 1e-8, "added to the denominator", _positive, allowed="> 0"),
        MAXIMIZE,
    ),
    formula="""
g = -grad if maximize else grad;  on the entries where g != 0 only (torch: the indices of
the coalesced sparse gradient); every other entry of p, m and v is left untouched
m = m + (g - m) * (1 - beta1);  v = v + (g^2 - v) * (1 - beta2)
p = p - lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)
t counts the steps in which the parameter had a gradient (even one with no nonzero entry)
""",
    optax="no optax block: optax.adam updates every entry (masking it with "
          "optax.masked is per parameter, not per entry)",
    differences=(
        ("optax.adam moves every entry: the moments of entries without a gradient decay and "
         "those entries keep moving", "trajectory"),
        ("torch needs sparse-layout gradients (RuntimeError on dense ones); on JAX the "
         "gradient is dense and the entries that are exactly 0 count as absent: an entry "
         "torch's sparse gradient materializes with the value 0 is updated by torch, not "
         "here", "mask"),
        ("cost: torch touches only the nnz materialized entries; the JAX transform reads and "
         "writes every entry of p, m and v (a masked dense update, Adam's memory traffic)",
         "cost"),
    ),
    momentum_key="betas", buffers=("exp_avg", "exp_avg_sq"),
    notes=("torch backend: torch.optim.SparseAdam itself, which raises RuntimeError on a dense "
           "gradient (use nn.Embedding(sparse=True) or grad.to_sparse(); for dense gradients "
           "use adam). JAX backend: dense gradients; an entry with gradient exactly 0 is left "
           "alone, as torch leaves an entry absent from a sparse gradient."),
))


# --------------------------------------------------------------------------------------------
# Muon and Adafactor (issue 18)

#: torch.optim._muon's constants (Keller Jordan's Muon: the quintic Newton-Schulz coefficients)
MUON_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def _ns_coefficients(name, value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise TypeError(f"{name}: expected a tuple (a, b, c) of three reals, got "
                        f"{type(value).__name__} {value!r}")
    if len(value) != 3:  # torch raises at its first step: "Coefficients must be a tuple of
        # exactly 3 values"
        raise ValueError(f"{name}: expected exactly 3 coefficients (a, b, c), got {len(value)}: "
                         f"{value!r}")
    return tuple(not_below()(f"{name}[{i}]", v) for i, v in enumerate(value))


def _ns_steps(name, value):
    v = integer(name, value)
    if v >= 100:  # torch raises at its first step ("must be less than 100")
        raise ValueError(f"{name}: expected an int < 100 (torch: fewer than 100 Newton-Schulz "
                         f"steps), got {value!r}")
    return v


def _adjust_lr_fn(name, value):
    if value not in (None, "original", "match_rms_adamw"):
        raise ValueError(f"{name}: expected one of [None, 'original', 'match_rms_adamw'], got "
                         f"{value!r}")
    return value


def _ns_accumulation(name, value):
    if value not in ("exact", "torch_cpu"):
        raise ValueError(f"{name}: expected one of ['exact', 'torch_cpu'], got {value!r}")
    return value


register(OptimizerSpec(
    name="muon", torch_class="Muon",
    summary="Muon: momentum, then Newton-Schulz orthogonalisation in bfloat16 (2-D parameters "
            "only); decoupled weight decay",
    options=(
        _lr(1e-3),
        Option("weight_decay", 0.1, "decoupled decay: p <- p * (1 - lr * weight_decay) (the "
               "unadjusted lr)", nonneg, allowed=">= 0"),
        Option("momentum", 0.95, "momentum factor: b <- lerp(b, g, 1 - momentum)", nonneg,
               allowed=">= 0"),
        Option("nesterov", True, "Nesterov: orthogonalise lerp(g, b, momentum) instead of b",
               boolean),
        Option("ns_coefficients", MUON_NS_COEFFICIENTS, "(a, b, c) of the quintic iteration "
               "X <- a X + (b A + c A^2) X, A = X X^T", _ns_coefficients,
               allowed="three reals"),
        Option("eps", 1e-7, "floor of the Frobenius norm the input is divided by", not_below()),
        Option("ns_steps", 5, "Newton-Schulz iterations", _ns_steps, allowed="int < 100"),
        Option("adjust_lr_fn", None, "None / 'original': lr * sqrt(max(1, A / B)); "
               "'match_rms_adamw': lr * 0.2 * sqrt(max(A, B)) for an A x B parameter",
               _adjust_lr_fn, allowed="None | 'original' | 'match_rms_adamw'"),
    ),
    formula="""
b = lerp(b, g, 1 - momentum)                      (b starts at 0)
u = lerp(g, b, momentum) if nesterov else b
X = bf16(u), transposed if A > B;  X = X / max(|X|_F, eps)      (bfloat16 arithmetic)
repeat ns_steps:  G = X X^T;  X = a X + (b G + c G G) X         (bfloat16, float32 sums)
p = p * (1 - lr * weight_decay)
p = p - adjusted_lr * X (transposed back)
adjusted_lr = lr * sqrt(max(1, A / B))  |  lr * 0.2 * sqrt(max(A, B))  (match_rms_adamw)
""",
    optax="no exact block: optax.contrib.muon differs (see differences); multiloss emulates "
          "torch's bfloat16 Newton-Schulz with lax.reduce_precision",
    differences=(
        ("optax.contrib.muon orthogonalises in the parameter's dtype (torch: bfloat16 "
         "arithmetic) and divides by |X|_F + eps (torch: max(|X|_F, eps); eps 1e-8 vs 1e-7)",
         "Newton-Schulz"),
        ("optax bias-corrects its momentum (EMA, as torch's lerp) and its Nesterov term; torch "
         "does not", "momentum"),
        ("optax scales by sqrt(max(1, fan_out / fan_in)) with fan_in = shape[0] (JAX's (in, "
         "out) layout), torch by sqrt(max(1, A / B)) of its (out, in) = (A, B) weight: the "
         "same array gets the reciprocal scale when not square", "adjust_lr"),
        ("optax's default weight_decay is 0 (torch 0.1); optax steps the non-2-D parameters "
         "with its own AdamW (torch raises)", "defaults"),
    ),
    jax_options=(Option(
        "ns_accumulation", "exact",
        "float32 sums of the bfloat16 matmuls: 'exact' (correctly rounded: torch's whenever its "
        "order sums exactly, always on small matrices) or 'torch_cpu' (torch 2.13's CPU "
        "order, measured on x86 with AVX512-BF16: oneDNN's (blocks of k) when m k n > 16^3, "
        "aten's kernels below, picked by size and operand layout as torch does; bit for bit per "
        "Newton-Schulz call, 4e-15 over 100 float64 steps on every shape measured, "
        "docs/optim.md; sequential scans, slow for large matrices)", _ns_accumulation,
        allowed="'exact' | 'torch_cpu'"),),
    momentum_key="momentum", buffers=("momentum_buffer",),
    notes=("Only 2-D parameters, as torch.optim.Muon: on JAX a parameter of another rank "
           "raises a ValueError naming its path and shape. The usual recipe, Muon for the "
           "matrices and AdamW for the rest, is one transform with parameter groups: "
           "get('muon', lr=0.02, param_groups={'muon': {}, 'adamw': {'optimizer': 'adamw', "
           "'lr': 3e-4}}, labels=muon_labels). torch runs the Newton-Schulz iteration in "
           "bfloat16; the JAX transform rounds to bfloat16 where torch does "
           "(lax.reduce_precision), which matches torch's trajectory to ~1e-16 in float64 "
           "except where a float32 sum summed in another order rounds to another bfloat16 "
           "(docs/optim.md measures it); ns_accumulation='torch_cpu' sums in torch's CPU "
           "order (4e-15 of torch over 100 float64 steps on an AVX512-BF16 CPU)."),
))


def _adafactor_eps(name, value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise TypeError(f"{name}: expected a pair (eps1, eps2), eps1 None or a real, got "
                        f"{type(value).__name__} {value!r}")
    eps1 = None if value[0] is None else nonneg(f"{name}[0]", value[0])
    return (eps1, nonneg(f"{name}[1]", value[1]))


def _beta2_decay(name, value):
    return real(None, 0.0)(name, value)


register(OptimizerSpec(
    name="adafactor", torch_class="Adafactor",
    summary="Adafactor as torch implements it: factored second moment for >= 2-D parameters, "
            "relative step min(lr, 1/sqrt(t)) * max(eps2, RMS(p)), update clipping d",
    options=(
        _lr(1e-2),
        Option("beta2_decay", -0.8, "1 - beta2_t = t ** beta2_decay", _beta2_decay,
               allowed="<= 0"),
        Option("eps", (None, 1e-3), "(eps1, eps2): eps1 floors the variance estimate (None: "
               "the parameter dtype's machine epsilon), eps2 the parameter RMS",
               _adafactor_eps, allowed="(None or >= 0, >= 0)"),
        Option("d", 1.0, "update clipping threshold: U / max(1, RMS(U) / d)", real(1.0),
               allowed=">= 1"),
        Option("weight_decay", 0.0, "decoupled decay: p <- p * (1 - lr * weight_decay)",
               nonneg, allowed=">= 0"),
        FOREACH, MAXIMIZE,
    ),
    formula="""
g = -grad if maximize else grad;  eps1 = finfo(p.dtype).eps if eps1 is None
w = t ** beta2_decay;  rho = min(lr, 1 / sqrt(t));  alpha = max(eps2, RMS(p)) * rho
p = p * (1 - lr * weight_decay)
>= 2-D:  R = lerp(R, |g|_row^2 / n, w);  C = lerp(C, |g|_col^2 / m, w)   (norms over the last
         two dims);  V = R C / max(mean(R), eps1)
else:    V = lerp(V, g * g, w)
U = g / sqrt(max(V, eps1^2));  p = p - alpha / max(1, RMS(U) / d) * U
""",
    optax="no exact block: optax.adafactor(lr, min_dim_size_to_factor=1) comes closest "
          "(scale_by_factored_rms -> clip_by_block_rms(d) -> scale(lr) -> "
          "scale_by_param_block_rms(eps2))",
    differences=(
        ("optax.adafactor factors only parameters whose two largest dimensions are >= 128 "
         "(min_dim_size_to_factor; torch factors every >= 2-D parameter, over its last two "
         "dimensions)", "factoring"),
        ("optax adds eps=1e-30 to g^2 inside the running averages; torch floors mean(R) and "
         "the estimate V with eps1 (machine epsilon) afterwards", "eps"),
        ("optax computes 1 - beta2_t = t^-0.8 in float32 even under x64", "decay"),
        ("optax multiplies by learning_rate; torch's step is min(lr, 1/sqrt(t)) (equal while "
         "lr <= 1/sqrt(t)); optax's weight_decay_rate adds wd * p unscaled by lr (torch: "
         "p * (1 - lr * weight_decay)); no maximize", "lr, weight_decay"),
    ),
    buffers=("row_var", "col_var", "variance"),
    notes=("foreach is accepted and has no effect on JAX (torch's foreach kernel gives the "
           "same numbers). eps1=None takes each parameter's dtype's machine epsilon; torch "
           "takes the first parameter's of the group for the whole group (the same unless a "
           "group mixes float32 and float64 parameters)."),
))


# --------------------------------------------------------------------------------------------
# lookup


def resolve(name: str) -> OptimizerSpec:
    """The spec of an optimizer by name, alias or torch class name (case-insensitive)."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected an optimizer name (str), got {type(name).__name__}")
    key = name if name in _NAMES else _norm(name)
    if key in _NAMES:
        return _SPECS[_NAMES[key]]
    every = sorted({n for s in _SPECS.values() for n in (s.name, s.torch_class, *s.aliases)})
    close = difflib.get_close_matches(name, every, n=5, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise ValueError(
        f"name: unknown optimizer {name!r}{hint}. multiloss.optim.available() lists all"
    )


def available() -> list[str]:
    """The canonical names of the optimizers."""
    return sorted(_SPECS)


def specs():
    return [_SPECS[n] for n in sorted(_SPECS)]


def info(name: str) -> dict:
    """An optimizer's torch class, hyperparameters (default, allowed, meaning), update formula,
    optax building blocks and the differences from the same-named optax function."""
    spec = resolve(name)
    return {
        "name": spec.name,
        "torch": f"torch.optim.{spec.torch_class}",
        "aliases": list(spec.aliases),
        "summary": spec.summary,
        "options": [
            {"name": o.name, "default": o.default, "allowed": o.allowed, "doc": o.doc}
            for o in spec.options
        ],
        "jax_options": [
            {"name": o.name, "default": o.default, "allowed": o.allowed, "doc": o.doc}
            for o in spec.jax_options
        ],
        "formula": spec.formula.strip(),
        "optax": spec.optax,
        "differences": [{"what": w, "affects": e} for w, e in spec.differences],
        "notes": spec.notes,
    }

