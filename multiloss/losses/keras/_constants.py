"""Keras' numerical constants, shared by the JAX and torch implementations (NumPy only)."""

import numpy as np

#: keras.backend.epsilon()
EPSILON = 1e-7
#: Keras' msle converts epsilon() to a tensor without a dtype (floatx, float32) before mixing it
#: with float64 values, so its float64 epsilon is float32(1e-7).
EPSILON_F32 = float(np.float32(1e-7))
#: log_cosh's log(2): ``ops.log(2.0)`` cast to the input's dtype.
LOG2 = float(np.log(2.0))

#: keras.backend.floatx(): the float dtype Keras converts integer and bool inputs to when no
#: input is floating (where one is, multiloss takes that input's dtype, as Keras with
#: ``dtype=`` that dtype)
FLOATX = "float32"


def same_rank_shapes(y_true_shape, y_pred_shape):
    """Keras' ``squeeze_or_expand_to_same_rank(y_true, y_pred)`` (``keras.src.losses.loss``,
    applied by every Keras loss class before its function), on shapes: where the ranks differ by
    one and the longer one's last axis is 1, that axis is squeezed, except that a rank-1 partner
    gets a trailing axis of 1 instead. ``(3,)`` against ``(3, 1)``: both ``(3, 1)``;
    ``(4, 5, 1)`` against ``(4, 5)``: both ``(4, 5)``. Other shapes are returned as they are."""
    t, p = tuple(y_true_shape), tuple(y_pred_shape)
    if len(t) == len(p) + 1 and t[-1] == 1:
        if len(p) == 1:
            p = p + (1,)
        else:
            t = t[:-1]
    elif len(p) == len(t) + 1 and p[-1] == 1:
        if len(t) == 1:
            t = t + (1,)
        else:
            p = p[:-1]
    return t, p
