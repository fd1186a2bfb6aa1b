import json
import os

import jax
import pytest
from hypothesis import HealthCheck, settings

# float64 parity needs JAX's 64-bit mode; float32 cases pass float32 arrays explicitly.
jax.config.update("jax_enable_x64", True)

# "ci" bounds the generated examples so that CI stays short; "fuzz" is the long campaign
# (HYPOTHESIS_PROFILE=fuzz python -m pytest tests/test_hypothesis.py, see README).
settings.register_profile(
    "ci", max_examples=3, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def shared_once(request, tmp_path_factory):
    """``shared_once(name, compute)``: compute() once per test session, also under
    pytest-xdist: the first worker to get there computes and saves (JSON), the others wait on
    a file lock and read. For expensive subprocesses (the 8-device JAX run, the gloo worlds)
    that must not run on every worker."""

    def once(name, compute):
        if getattr(request.config, "workerinput", None) is None:
            return compute()
        from filelock import FileLock

        path = tmp_path_factory.getbasetemp().parent / f"multiloss-{name}.json"
        with FileLock(str(path) + ".lock"):
            if path.is_file():
                return json.loads(path.read_text())
            data = compute()
            path.write_text(json.dumps(data))
            return data

    return once
