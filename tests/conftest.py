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
    "ci", max_examples=2, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _once(config, tmp_path_factory, name, compute):
    """compute() once per test session; under pytest-xdist the first worker to get there
    computes and saves (JSON), the others wait on a file lock and read."""
    if getattr(config, "workerinput", None) is None:
        cache = config.__dict__.setdefault("_multiloss_shared", {})
        if name not in cache:
            cache[name] = compute()
        return cache[name]
    from filelock import FileLock

    path = tmp_path_factory.getbasetemp().parent / f"multiloss-{name}.json"
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return json.loads(path.read_text())
        data = compute()
        path.write_text(json.dumps(data))
        return data


@pytest.fixture(scope="session")
def shared_once(request, tmp_path_factory):
    """``shared_once(name, compute)``: compute() once per test session, also under
    pytest-xdist (``_once``). For expensive subprocesses (the 8-device JAX runs, the gloo
    worlds) that must not run on every worker. Those named in a test module's
    ``SHARED_ONCE`` are started early under xdist (``pytest_runtestloop``)."""
    return lambda name, compute: _once(request.config, tmp_path_factory, name, compute)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    """Under pytest-xdist, one worker starts every selected module's ``SHARED_ONCE``
    computations (name -> compute(tmp_path_factory), subprocesses) in a background thread as
    the session begins, so that they run beside the tests instead of a worker waiting on
    them when its first test needs one (each is still computed once: ``_once``'s lock)."""
    config = session.config
    if getattr(config, "workerinput", None) is None or session.testsfailed or not session.items:
        return
    base = config._tmp_path_factory.getbasetemp().parent
    try:  # one worker starts them: the first to create the marker
        os.close(os.open(base / "multiloss-prefetch", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    jobs = {}
    for module in {item.module for item in session.items if hasattr(item, "module")}:
        for name, compute in getattr(module, "SHARED_ONCE", {}).items():
            jobs[name] = compute
    if not jobs:
        return
    factory = config._tmp_path_factory

    def run():
        for name, compute in jobs.items():
            try:
                _once(config, factory, name, lambda compute=compute: compute(factory))
            except BaseException:  # noqa: BLE001 - the fixture computes it again and fails
                pass

    import threading

    threading.Thread(target=run, name="multiloss-prefetch", daemon=True).start()
