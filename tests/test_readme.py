"""The README's quick start runs as written, and its two set-up commands are the ones CI and
the parity report use."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_quick_start_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has no python block"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    loss, g = namespace["loss"], namespace["g"]
    assert loss.shape == () and g.shape == (8, 3)
    assert float(abs(g[3]).sum()) == 0.0  # the ignored row gets no gradient


def test_set_up_commands_match_ci():
    bash = re.findall(r"```bash\n(.*?)```", README, flags=re.S)[0]
    install = next(ln for ln in bash.splitlines() if "pip install torch==2.13.0" in ln)
    assert install.endswith("multiloss parity")
    test_cmd = bash.rstrip().splitlines()[-1].split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines(), (test_cmd, "not in .ci/run")


def test_optimizer_snippet_runs():
    import jax
    import numpy as np

    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    block = next(b for b in blocks if "multiloss.optim" in b)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    tx, state, params = namespace["tx"], namespace["state"], namespace["params"]
    grads = jax.tree_util.tree_map(np.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    # AdamW's first step moves every parameter by about -lr (the first OneCycleLR lr: 1.2e-4)
    assert np.all(np.asarray(updates["w"]) < 0)
    tx2, labels = namespace["tx2"], namespace["labels"]
    assert set(labels) == {"weight", "bias"} and hasattr(tx2, "update")
