"""Shared pieces of the benchmarks: the machine and its allocator settings, versions, interleaved
timing, peak resident memory of one call, and table formatting."""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import threading
import time
from pathlib import Path

#: The committed runs (documentation). No command writes here unless its --out names it.
RESULTS = Path(__file__).resolve().parent / "results"

_ALLOC_FILES = {
    "transparent_hugepage": "/sys/kernel/mm/transparent_hugepage/enabled",
    "transparent_hugepage_defrag": "/sys/kernel/mm/transparent_hugepage/defrag",
    "transparent_hugepage_shmem": "/sys/kernel/mm/transparent_hugepage/shmem_enabled",
    "overcommit_memory": "/proc/sys/vm/overcommit_memory",
}
_ALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_",
              "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "LD_PRELOAD",
              "XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_CPP_MIN_LOG_LEVEL",
              "JAX_PLATFORMS", "KERAS_BACKEND", "TORCHINDUCTOR_CACHE_DIR")


def _read(path):
    try:
        return Path(path).read_text().strip()
    except OSError as e:
        return f"unreadable ({e.__class__.__name__})"


def machine() -> dict:
    """CPU, memory, load and the allocator settings that change CPU timings (transparent huge
    pages alone by ~2x on this kind of machine)."""
    info = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "libc": " ".join(platform.libc_ver()),
    }
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            info["cpu_model"] = line.split(":", 1)[1].strip()
            break
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal"):
            info["mem_total"] = line.split(":", 1)[1].strip()
            break
    try:
        info["sched_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    info["allocator"] = {k: _read(p) for k, p in _ALLOC_FILES.items()}
    info["allocator"]["env"] = {k: os.environ[k] for k in _ALLOC_ENV if k in os.environ}
    return info


def versions() -> dict:
    out = {}
    try:
        import multiloss

        out["multiloss"] = multiloss.__version__
    except Exception:  # noqa: BLE001
        pass
    import numpy as np

    out["numpy"] = np.__version__
    for mod in ("jax", "jaxlib", "optax", "torch", "keras"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except Exception as e:  # noqa: BLE001
            out[mod] = f"unavailable ({e.__class__.__name__})"
    if "unavailable" not in str(out.get("jax")):
        import jax

        out["jax_devices"] = [str(d) for d in jax.devices()]
    if "unavailable" not in str(out.get("torch")):
        import torch

        out["torch_threads"] = torch.get_num_threads()
        out["torch_config"] = {"mkldnn": torch.backends.mkldnn.is_available(),
                               "openmp": torch.backends.openmp.is_available()}
    return out


# ---------------------------------------------------------------------------------------------
# timing


def median(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def interleaved(fns: dict, repeats: int, warmup: int, min_time: float = 0.01,
                slow: float = 1.0, pause: float = 0.002) -> dict:
    """Time every callable of ``fns`` (name -> fn() that blocks until its result is ready) in
    ``repeats`` rounds, each round calling every fn in turn (in a new seeded random order,
    ``pause`` seconds before each), after ``warmup`` (at least 1)
    untimed calls each (two where the second takes more than ``slow`` seconds). A fn faster
    than ``min_time`` (its last warm-up call) is called ``k`` times per measurement and its
    time divided by ``k``. Returns name -> list of seconds per
    call (an error message instead where the fn failed)."""
    times, errors, inner = {k: [] for k in fns}, {}, {}
    live = dict(fns)
    for name, fn in list(live.items()):
        try:
            for i in range(max(warmup, 1)):
                t0 = time.perf_counter()  # the last warm-up call sizes the measurements
                fn()
                dt = time.perf_counter() - t0
                if i and dt > slow:  # a second call this slow is its work (compiled, warm)
                    break
        except Exception as e:  # noqa: BLE001 - reported, the others go on
            errors[name] = f"{type(e).__name__}: {str(e)[:300]}"
            del live[name]
            continue
        inner[name] = max(1, min(1000, int(min_time / max(dt, 1e-7))))
    order = list(live)
    shuffle = random.Random(0).shuffle
    for _ in range(repeats):
        # a new order every round (seeded), and a pause before each measurement: a JAX call
        # leaves XLA's worker threads spinning and a torch call its OpenMP threads, which take
        # the cores from whatever runs next; a fixed order would always charge that to the
        # same implementation
        shuffle(order)
        for name in order:
            fn, k = live[name], inner[name]
            time.sleep(pause)
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            times[name].append((time.perf_counter() - t0) / k)
    return {k: (v if k not in errors else errors[k]) for k, v in times.items()}


def round_ratios(times: dict, ref: str) -> dict:
    """Median over rounds of each implementation's time divided by ``ref``'s time in the same
    round (the load of a shared machine changes between rounds, less within one)."""
    base = times.get(ref)
    if not isinstance(base, list) or not base:
        return {}
    out = {}
    for k, v in times.items():
        if isinstance(v, list) and len(v) == len(base):
            out[k] = median([a / b for a, b in zip(v, base) if b > 0])
    return out


# ---------------------------------------------------------------------------------------------
# memory


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_delta(fn, interval=0.0005) -> int:
    """Peak resident memory above the level before the call, sampled every ``interval``
    seconds during ``fn()`` (allocations by torch and XLA are not seen by tracemalloc)."""
    base = rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        fn()
    finally:
        stop.set()
        th.join()
    peak[0] = max(peak[0], rss_bytes())
    return peak[0] - base


# ---------------------------------------------------------------------------------------------
# formatting


def fmt(v, spec=".2f"):
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def table(head, rows) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
             "-" * (sum(widths) + 2 * (len(widths) - 1))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)
