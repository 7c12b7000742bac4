"""``reelforge templates init``: a template (graph + manifest) from a ComfyUI export or a file ComfyUI wrote.

``init_template(file, name)``:

1. reads the graph (:mod:`reelforge.templates.sources`); a UI-format workflow is converted
   (:mod:`reelforge.templates.uiformat`);
2. checks it (:func:`reelforge.templates.infer.check_graph`) and infers the manifest
   (:func:`reelforge.templates.infer.infer_manifest`);
3. loads the result as a template (the same checks as ``load_template``) and, when every class has a schema
   here, validates it against the offline catalogue and the lock with its additions (what
   ``reelforge templates validate`` does);
4. only then writes ``NAME.json`` (the graph's text exactly as found), ``NAME.manifest.yaml`` and the lock with
   the model files and packs it lacked (folder and name; url, size and sha256 unknown: null), each atomically;
   a failure on the way removes what this call wrote.

The one change ever made to a graph: ``is_changed`` keys, which ComfyUI adds to the prompt it embeds in files
(LoadImage's file hash), are removed, because a worker that receives them skips its own fingerprint and would
reuse the cached result of an older input file. The text is then ``json.dumps`` of the graph, as ComfyUI wrote it.
Any problem raises :class:`InitRefused` (every one found, each naming the file and the node) with nothing written.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reelforge.comfy.graph import ModelRef
from reelforge.templates.catalogue import Catalogue, offline_catalogue
from reelforge.templates.errors import InitRefused, TemplateError
from reelforge.templates.infer import (
    Inference,
    check_graph,
    infer_manifest,
    label,
    new_pack_entries,
    packs_from_workflow,
)
from reelforge.templates.lock import DEFAULT_LOCK, ComfyLock, CustomNodePack, LockError, ModelFile, load_lock
from reelforge.templates.sources import Source, read_source
from reelforge.templates.template import (
    DEFAULT_FOLDER,
    GRAPH_SUFFIX,
    MANIFEST_SUFFIX,
    Template,
    check_against_lock,
)
from reelforge.templates.uiformat import ui_to_api

__all__ = ["InitResult", "init_template"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass
class InitResult:
    """What ``init_template`` wrote and found."""

    template: Template
    graph_path: Path
    manifest_path: Path
    lock_path: Path
    source: str  # what the graph was read from ("PNG metadata", ...)
    added_models: list[ModelRef] = field(default_factory=list)
    added_packs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    validated: bool = False  # validated offline against the catalogue and the lock


def _strip_is_changed(graph: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    stripped = [i for i, n in graph.items() if isinstance(n, dict) and "is_changed" in n]
    if not stripped:
        return graph, []
    cleaned = {i: ({k: v for k, v in n.items() if k != "is_changed"} if i in stripped else n) for i, n in graph.items()}
    listed = ", ".join(label(graph, i) for i in stripped)
    return cleaned, [
        f"removed the is_changed key ComfyUI adds while executing from {listed}: kept, a worker would reuse results "
        "made from an older input file"
    ]


def _graph_of(source: Source, catalogue: Catalogue, file: str) -> tuple[Any, str, list[str]]:
    if source.format == "ui":
        assert source.workflow is not None
        graph, text = ui_to_api(source.workflow, catalogue.object_info(), file)
        return graph, text, [f"converted the UI-format workflow to API format ({len(graph)} nodes)"]
    assert source.graph_text is not None
    graph = json.loads(source.graph_text)
    if isinstance(graph, dict):
        cleaned, notes = _strip_is_changed(graph)
        if notes:
            return cleaned, json.dumps(cleaned), notes
    return graph, source.graph_text, []


def _manifest(name: str, inference: Inference, source: Source) -> dict[str, Any]:
    return {
        "name": name,
        "kind": inference.kind,
        "description": f"Made by `reelforge templates init` from {source.path.name} ({source.described}).",
        "parameters": inference.parameters,
        "outputs": inference.outputs,
        "models": [{"folder": m.folder, "name": m.name} for m in inference.models],
        "custom_nodes": inference.custom_nodes,
    }


def _indented(items: list[dict[str, Any]]) -> str:
    text = yaml.safe_dump(items, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)
    return "".join(f"  {line}\n" if line else "\n" for line in text.splitlines())


def lock_text(text: str, models: list[ModelFile], packs: list[CustomNodePack]) -> str:
    """The lock file's text with entries appended (its comments and layout kept): packs at the end of
    ``custom_nodes``, models at the end of ``models``."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    tops = [(i, line.split(":", 1)[0]) for i, line in enumerate(lines) if re.match(r"[A-Za-z_]+:", line)]

    def section_end(key: str) -> int | None:
        for n, (i, top) in enumerate(tops):
            if top == key:
                end = tops[n + 1][0] if n + 1 < len(tops) else len(lines)
                while end > i + 1 and not lines[end - 1].strip():
                    end -= 1
                return end
        return None

    def add(key: str, entries: list[dict[str, Any]]) -> None:
        nonlocal lines, tops
        if not entries:
            return
        end = section_end(key)
        block = _indented(entries)
        if end is None:
            lines.append(f"{key}:\n{block}")
        else:
            start = next(i for i, top in tops if top == key)
            if re.match(rf"{key}:\s*\[\s*\]\s*(#.*)?$", lines[start].rstrip("\n")):
                lines[start] = f"{key}:\n"
            lines.insert(end, block)
        tops = [(i, line.split(":", 1)[0]) for i, line in enumerate(lines) if re.match(r"[A-Za-z_]+:", line)]

    add("custom_nodes", [p.model_dump(mode="json") for p in packs])
    add("models", [m.model_dump(mode="json", exclude={"license"}) for m in models])
    return "".join(lines)


def _write_atomic(path: Path, data: str) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def init_template(
    file: Path,
    name: str,
    *,
    folder: Path | None = None,
    lock_path: Path | None = None,
    force: bool = False,
    catalogue: Catalogue | None = None,
) -> InitResult:
    """Make template ``name`` in ``folder`` (default workflows/) from ``file``; see the module docstring."""
    shown = str(file)
    folder = folder or DEFAULT_FOLDER
    lock_path = lock_path or DEFAULT_LOCK
    catalogue = catalogue or offline_catalogue()
    if not NAME_PATTERN.fullmatch(name):
        raise InitRefused(shown, [f"--name {name!r}: use letters, digits, '_' and '-' (at most 64, not starting with "
                                  "'_' or '-')"])
    if not folder.is_dir():
        raise InitRefused(shown, [f"--folder {folder} is not a directory"])
    graph_path, manifest_path = folder / f"{name}{GRAPH_SUFFIX}", folder / f"{name}{MANIFEST_SUFFIX}"
    existing = [p for p in (graph_path, manifest_path) if p.exists()]
    if existing and not force:
        listed = " and ".join(str(p) for p in existing)
        raise InitRefused(shown, [f"template {name!r} exists already ({listed}): choose another --name, or --force"])
    try:
        lock = load_lock(lock_path)
        original_lock = lock_path.read_text(encoding="utf-8")
    except (LockError, OSError) as exc:
        raise InitRefused(shown, [f"the lock cannot be read: {exc}"]) from exc

    source = read_source(file)
    graph, text, notes = _graph_of(source, catalogue, shown)
    guesses = packs_from_workflow(source.workflow)
    problems = check_graph(graph, catalogue, lock, guesses)
    if problems:
        raise InitRefused(shown, problems)
    inference = infer_manifest(graph, catalogue, lock, guesses)
    if inference.problems:
        raise InitRefused(shown, inference.problems)
    manifest = _manifest(name, inference, source)
    try:
        template = Template.from_data(name, graph, manifest, catalogue=catalogue, path=graph_path)
    except TemplateError as exc:
        raise InitRefused(shown, [f"the inferred manifest does not load: {p}" for p in exc.problems]) from exc

    present = {(m.folder, m.name) for m in lock.models}
    added_models = [m for m in inference.models if (m.folder, m.name) not in present]
    model_entries = [ModelFile(folder=m.folder, name=m.name, used_by=[name]) for m in added_models]
    pack_entries = new_pack_entries(inference, lock)
    new_lock = lock.model_copy(
        update={"models": [*lock.models, *model_entries], "custom_nodes": [*lock.custom_nodes, *pack_entries]}
    )
    new_text = lock_text(original_lock, model_entries, pack_entries)
    if ComfyLock.model_validate(yaml.safe_load(new_text)) != new_lock:  # pragma: no cover - a layout we cannot edit
        message = f"the lock {lock_path} has a layout this command cannot extend: add the entries by hand"
        raise InitRefused(shown, [message])

    validated = all(cls in catalogue for cls in template.node_classes)
    if validated:
        found = check_against_lock(template, new_lock)
        try:
            template.validate(catalogue.object_info(), new_lock.models_by_folder(), lock=new_lock)
        except TemplateError as exc:
            found += exc.problems
        if found:
            raise InitRefused(
                shown, [f"the graph does not validate against ComfyUI 0.3.64's schemas: {p}" for p in found]
            )
    else:
        missing = sorted(c for c in template.node_classes if c not in catalogue)
        notes.append(
            f"not validated offline: no schema here for {', '.join(missing)}; validate against a worker with the "
            f"pack: reelforge templates validate {name} --worker URL"
        )
    notes += inference.notes
    written: list[Path] = []
    try:
        for path, data in ((graph_path, text), (manifest_path, _yaml(manifest))):
            _write_atomic(path, data)
            written.append(path)
        if new_text != original_lock:
            _write_atomic(lock_path, new_text)
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        raise InitRefused(shown, [f"could not write the template: {exc}"]) from exc
    return InitResult(
        template=template, graph_path=graph_path, manifest_path=manifest_path, lock_path=lock_path,
        source=source.described, added_models=added_models, added_packs=[p.pack for p in pack_entries], notes=notes,
        validated=validated,
    )


def _yaml(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)
