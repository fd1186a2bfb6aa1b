"""The docs site: the generated reference covers every registered loss, optimizer and schedule;
the getting-started page mirrors the README; the tutorial includes the demo's code; the
multi-task page's examples run; the nav lists every page; every public function of the
documented modules has a docstring. (``mkdocs build --strict`` itself runs in .ci/run.)"""

from __future__ import annotations

import importlib.util
import inspect
import pathlib
import re

import pytest

import multiloss
import multiloss.optim as mo

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _gen_ref():
    spec = importlib.util.spec_from_file_location("gen_ref", DOCS / "gen_ref.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sections(page: str) -> dict[str, str]:
    """Generated page -> {name: its section's text}, by the ``## `name` {#name}`` headings."""
    parts = re.split(r"^## `([\w.]+)` \{#\1\}$", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_loss_reference_covers_every_loss_and_option():
    gen = _gen_ref()
    page = gen.loss_reference()
    sections = _sections(page)
    assert sorted(sections) == multiloss.available()
    table = page.split("## torch to multiloss")[1].split("\n## ")[0]
    for name in multiloss.available():
        d = multiloss.info(name)
        text = sections[name]
        assert f"[`{name}`](#{name})" in table
        for o in d["options"]:
            assert f"| `{o['name']}` |" in text, (name, o["name"])
        for i in d["inputs"]:
            assert f"| `{i['name']}` |" in text, (name, i["name"])
        assert d["formula"].rstrip() in text
        assert gen.esc(d["reference"]) in text
        assert gen.esc(d["summary"]) in text
        if d["notes"]:
            assert "Differences from other libraries" in text


def test_optimizer_reference_covers_every_optimizer_and_schedule():
    page = _gen_ref().optimizer_reference()
    sections = _sections(page)
    assert sorted(sections) == mo.available()
    for name in mo.available():
        d = mo.info(name)
        text = sections[name]
        assert d["torch"] in text and d["formula"] in text
        for o in d["options"] + d["jax_options"]:
            assert f"| `{o['name']}`" in text, (name, o["name"])
        for diff in d["differences"]:
            assert "Differences from the same-named optax function" in text
            assert diff["affects"].split()[0] in text
    for sched in mo.schedules.__all__:
        if sched != "Schedule":
            assert f"| `{sched}` |" in page, sched


def test_escaping_keeps_tables_and_code():
    esc = _gen_ref().esc
    assert esc("'mean' | 'sum'") == "'mean' \\| 'sum'"
    assert esc("a <b> * c_d") == "a &lt;b&gt; \\* c\\_d"
    assert esc("see ``x * y`` and `a|b`") == "see ``x * y`` and `a|b`"
    assert _gen_ref().pages().keys() == {"reference/losses.md", "reference/optimizers.md"}


def test_getting_started_mirrors_the_readme():
    readme = (ROOT / "README.md").read_text()
    page = (DOCS / "getting-started.md").read_text()
    for lang in ("bash", "python"):
        first = re.findall(rf"```{lang}\n(.*?)```", readme, flags=re.S)[0]
        assert re.findall(rf"```{lang}\n(.*?)```", page, flags=re.S)[0] == first, lang


def test_tutorial_includes_the_demo_code():
    page = (DOCS / "porting.md").read_text()
    code = (ROOT / "multiloss" / "demo.py").read_text()
    included = re.findall(r'^--8<-- "multiloss/demo\.py:(\w+)"$', page, flags=re.M)
    assert included == ["data", "torch", "port", "train"]
    for name in included:
        assert code.count(f"# --8<-- [start:{name}]") == 1
        assert code.count(f"# --8<-- [end:{name}]") == 1
    # what the tutorial says the code does is what it does
    assert "multiloss.from_torch(criterion)" in code
    assert "mo.from_torch(optimizer, scheduler, clip_grad_norm=1.0)" in code
    assert "clip_grad_norm_(model.parameters(), max_norm=1.0)" in code
    assert (DOCS / "assets" / "demo_losses.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("index", [0, 1, 2])
def test_multitask_examples_run(index):
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "multitask.md").read_text(), flags=re.S)
    assert len(blocks) == 3
    exec(compile(blocks[index], f"multitask.md[{index}]", "exec"), {})


def test_nav_lists_every_page():
    yml = (ROOT / "mkdocs.yml").read_text()
    nav = re.findall(r":\s*([\w/.-]+\.md)\s*$", yml, flags=re.M)
    generated = set(_gen_ref().pages())
    for page in nav:
        assert page in generated or (DOCS / page).is_file(), page
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert on_disk | generated == set(nav)
    assert "docs/gen_ref.py" in yml and "pymdownx.snippets" in yml and "mkdocstrings" in yml
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^mkdocs build --strict -d ", ci, flags=re.M)


def _public(module):
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name)
        if inspect.ismodule(obj) or getattr(obj, "__module__", module.__name__) != module.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield name, obj
            if inspect.isclass(obj):
                for m, f in vars(obj).items():
                    if not m.startswith("_") and (inspect.isfunction(f) or isinstance(f, property)):
                        yield f"{name}.{m}", f


def test_every_public_function_of_the_new_modules_has_a_docstring():
    import multiloss._combine
    import multiloss.demo
    import multiloss.nn
    import multiloss.nn._jax
    import multiloss.nn._torch

    missing = []
    for module in (multiloss._combine, multiloss.demo, multiloss.nn, multiloss.nn._jax,
                   multiloss.nn._torch):
        for name, obj in _public(module):
            if not (inspect.getdoc(obj) or "").strip():
                missing.append(f"{module.__name__}.{name}")
    for name in ("get", "available", "info", "resolve", "from_torch", "combine", "LossParts"):
        if not inspect.getdoc(getattr(multiloss, name)):
            missing.append(f"multiloss.{name}")
    for name in mo.__all__:
        obj = getattr(mo, name)
        if not inspect.ismodule(obj) and not inspect.getdoc(obj):
            missing.append(f"multiloss.optim.{name}")
    assert not missing, missing


def test_hook_renders_sphinx_roles_and_table_pipes():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    html = ("see :func:<code>get</code> and :class:<code>~multiloss.LossParts</code>; "
            "<code>a \\| b</code>")
    assert hooks.on_page_content(html, None, None, None) == (
        "see <code>get</code> and <code>LossParts</code>; <code>a | b</code>")
