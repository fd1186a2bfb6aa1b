"""The reference pages of the docs, generated from the registries at every ``mkdocs build`` (by
the mkdocs-gen-files plugin, see mkdocs.yml), so that they cannot drift from the code:

- ``reference/losses.md``: for every loss in ``multiloss.available()``, its torch class and
  functional, aliases, inputs, options (default, allowed values, meaning), formula, reference
  and the differences from other libraries (``multiloss.info(name)``);
- ``reference/optimizers.md``: for every optimizer in ``multiloss.optim.available()``, its
  torch class, hyperparameters, update formula, optax building blocks and differences
  (``multiloss.optim.info(name)``), and the LR schedules of ``multiloss.optim.schedules``.

Importable (``loss_reference()``, ``optimizer_reference()``, ``pages()``) for the tests; run as
a script it writes the pages through mkdocs-gen-files (or, outside mkdocs, prints them).
Imports neither torch nor jax.
"""

from __future__ import annotations

import html
import inspect
import re

import multiloss
import multiloss.optim as mo
from multiloss.optim import schedules

_CODE = re.compile(r"(``.+?``|`[^`]+`)")


def esc(text) -> str:
    """Plain registry text as Markdown on one line: HTML and Markdown specials (the table pipe
    included) escaped outside code spans; code spans are left as they are (Python-Markdown's
    tables do not split cells at a pipe inside a code span)."""
    text = " ".join(str(text).split())
    out = []
    for i, piece in enumerate(_CODE.split(text)):
        if i % 2:  # a code span
            out.append(piece)
        else:
            piece = html.escape(piece, quote=False)
            out.append(re.sub(r"([\\*_\[\]|#])", r"\\\1", piece))
    return "".join(out)


def code(value) -> str:
    """A value as an inline code span."""
    return "`" + repr(value) + "`"


def _torch_class(d: dict) -> str | None:
    return next((a for a in d["aliases"] if a.endswith("Loss") and a[0].isupper()), None)


def _functional(d: dict) -> str:
    ref = d["reference"]
    m = re.match(r"(torch\.nn\.functional\.\w+)", ref)
    return m.group(1) if m else ref


def loss_reference() -> str:
    """The per-loss reference page, from ``multiloss.available()`` and ``multiloss.info``."""
    names = multiloss.available()
    infos = [multiloss.info(n) for n in names]
    lines = [
        "# Loss reference",
        "",
        "Generated from the registry (`multiloss.info(name)`) when the docs are built: every "
        f"registered loss ({len(names)}), with torch's option names and defaults. Every loss "
        "also takes `sample_weight=` at call time and follows [the weighting "
        "contract](../weighting.md); `multiloss info NAME` prints the same on the command line.",
        "",
        "## torch to multiloss",
        "",
        "| multiloss name | torch class | torch functional (the reference) | family | summary |",
        "|---|---|---|---|---|",
    ]
    for d in infos:
        cls = _torch_class(d)
        lines.append(
            f"| [`{d['name']}`](#{d['name']}) | {'`torch.nn.' + cls + '`' if cls else '—'} | "
            f"`{_functional(d)}` | {d['family']} | {esc(d['summary'])} |")
    lines += [
        "",
        "In code: `multiloss.get(NAME, backend=\"jax\" | \"torch\", **options)` by any of the "
        "names, or `multiloss.from_torch(criterion)` from a live torch module.",
    ]
    for d in infos:
        cls = _torch_class(d)
        lines += ["", f"## `{d['name']}` {{#{d['name']}}}", "", esc(d["summary"]), ""]
        lines.append(f"- family: {d['family']}")
        lines.append("- names: " + ", ".join(f"`{n}`" for n in [d["name"], *d["aliases"]]))
        if cls:
            lines.append(f"- from torch: `multiloss.from_torch(torch.nn.{cls}(...))`")
        lines.append(f"- reference: {esc(d['reference'])}")
        lines.append("- reductions: " + ", ".join(code(r) for r in d["reductions"]))
        lines += ["", f"**Inputs**, in {esc(d['order'])} (positional, or as keywords of "
                  "their names):", "",
                  "| input | meaning | differentiable |", "|---|---|---|"]
        for i in d["inputs"]:
            lines.append(f"| `{i['name']}` | {esc(i['doc'])} | "
                         f"{'yes' if i['differentiable'] else 'no'} |")
        lines += ["", "**Options**, torch's names and defaults:", "",
                  "| option | default | allowed | meaning |", "|---|---|---|---|"]
        for o in d["options"]:
            lines.append(f"| `{o['name']}` | {code(o['default'])} | {esc(o['allowed']) or '—'} | "
                         f"{esc(o['doc'])} |")
        lines += ["", "**Formula**", "", "```text", d["formula"].rstrip(), "```"]
        if d["notes"]:
            lines += ["", "**Differences from other libraries.** " + esc(d["notes"])]
        lines += ["", "```python",
                  f'loss = multiloss.get("{cls or d["name"]}", backend="jax")   '
                  f'# or "{d["name"]}"; backend="torch": a torch.nn.Module',
                  "```"]
    return "\n".join(lines) + "\n"


def _schedule_doc(cls) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.split("\n\n")[0]


def optimizer_reference() -> str:
    """The per-optimizer reference page, from ``multiloss.optim.available()`` and
    ``multiloss.optim.info``, and the schedules of ``multiloss.optim.schedules``."""
    names = mo.available()
    infos = [mo.info(n) for n in names]
    scheds = [n for n in schedules.__all__ if n != "Schedule"]
    lines = [
        "# Optimizer and schedule reference",
        "",
        "Generated from the registry (`multiloss.optim.info(name)`) when the docs are built: "
        f"every optimizer ({len(names)}) and schedule ({len(scheds)}), with torch's "
        "hyperparameter names and defaults. The measured differences from optax and the "
        "results table: [Optimizers and schedules](../optim.md).",
        "",
        "## torch to multiloss",
        "",
        "| multiloss name | torch.optim class | summary | optax building blocks |",
        "|---|---|---|---|",
    ]
    for d in infos:
        lines.append(f"| [`{d['name']}`](#{d['name']}) | `{d['torch'].split('.')[-1]}` | "
                     f"{esc(d['summary'])} | "
                     f"{esc(d['optax'])} |")
    lines += [
        "",
        "In code: `multiloss.optim.get(NAME, backend=\"jax\", **hyperparameters)` (an optax "
        "transform; extras `schedule=`, `param_groups=`, `labels=`, `clip_grad_norm=`, "
        "`clip_grad_value=`), `backend=\"torch\"` for the torch optimizer, or "
        "`multiloss.optim.from_torch(optimizer, scheduler, clip_grad_norm=...)` from live "
        "torch objects.",
    ]
    for d in infos:
        lines += ["", f"## `{d['name']}` {{#{d['name']}}}", "", esc(d["summary"]), ""]
        lines.append(f"- torch: `{d['torch']}`")
        lines.append("- names: " + ", ".join(f"`{n}`" for n in
                                             [d["name"], d["torch"].split(".")[-1], *d["aliases"]]))
        lines.append(f"- optax building blocks: {esc(d['optax'])}")
        lines += ["", "**Hyperparameters**, torch's names and defaults:", "",
                  "| hyperparameter | default | allowed | meaning |", "|---|---|---|---|"]
        for o in d["options"]:
            lines.append(f"| `{o['name']}` | {code(o['default'])} | {esc(o['allowed']) or '—'} | "
                         f"{esc(o['doc'])} |")
        for o in d["jax_options"]:
            lines.append(f"| `{o['name']}` (JAX only) | {code(o['default'])} | "
                         f"{esc(o['allowed']) or '—'} | {esc(o['doc'])} |")
        lines += ["", "**Update** (torch's):", "", "```text", d["formula"].rstrip(), "```"]
        if d["differences"]:
            lines += ["", "**Differences from the same-named optax function:**", ""]
            lines += [f"- {esc(x['what'])} (affects: {esc(x['affects'])})"
                      for x in d["differences"]]
        if d["notes"]:
            lines += ["", "**Notes.** " + esc(d["notes"])]
    lines += ["", "## Schedules", "",
              "`multiloss.optim.schedules.<TorchName>(...)` takes torch's arguments without the "
              "optimizer; pass it as `schedule=`. Update k uses torch's lr after k "
              "`scheduler.step()` calls.", "",
              "| schedule | signature | rule |", "|---|---|---|"]
    for n in scheds:
        cls = getattr(schedules, n)
        sig = str(inspect.signature(cls))
        lines.append(f"| `{n}` | `{sig}` | "
                     f"{esc(_schedule_doc(cls))} |")
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    """Generated page path (relative to docs/) -> Markdown."""
    return {"reference/losses.md": loss_reference(),
            "reference/optimizers.md": optimizer_reference()}


def main() -> None:
    try:
        import mkdocs_gen_files
    except ImportError:  # outside a docs build: print
        for path, text in pages().items():
            print(f"<!-- {path} -->\n{text}")
        return
    for path, text in pages().items():
        with mkdocs_gen_files.open(path, "w") as f:
            f.write(text)
        mkdocs_gen_files.set_edit_path(path, "gen_ref.py")


if __name__ in ("__main__", "<run_path>"):  # run by mkdocs-gen-files (runpy.run_path)
    main()
