"""Keras' numerical constants, shared by the JAX and torch implementations (NumPy only)."""

import numpy as np

#: keras.backend.epsilon()
EPSILON = 1e-7
#: Keras' msle converts epsilon() to a tensor without a dtype (floatx, float32) before mixing it
#: with float64 values, so its float64 epsilon is float32(1e-7).
EPSILON_F32 = float(np.float32(1e-7))
#: log_cosh's log(2): ``ops.log(2.0)`` cast to the input's dtype.
LOG2 = float(np.log(2.0))
