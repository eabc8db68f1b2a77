"""Flow documents in and out: one cattrs converter, orjson bytes, every problem named.

``parse_flow`` reads a document in three passes, each reporting *all* its problems with
the path of the field: JSON syntax (line and column), shape and types (cattrs, through
``transform_error``), then meaning (ids, runtimes, files, wires, ports). ``dump_flow``
writes a stable, git-friendly form: fixed key order, defaults left out, two-space indent.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import cattrs
import orjson

from .converter import json_type, make_converter
from .converter import problems as structure_problems
from .errors import FlowError, Problem
from .limits import MAX_CONFIG, MAX_DOCUMENT, MAX_ID, MAX_MODULE_FILES, MAX_MODULES, MAX_TIMEOUT
from .model import DEFAULT_TIMEOUT, FORMAT_VERSION, ID_PATTERN, Flow, Module, Wire
from .requirements import normalize
from .resources import format_size, human_size, parse_size

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

__all__ = [
    "FlowDocument",
    "ModuleDocument",
    "dump_flow",
    "inside_folder",
    "load_flow",
    "parse_flow",
]


@attrs.define
class ModuleDocument:
    """A module as written in a flow document (before validation gives it meaning)."""

    id: str
    runtime: str
    code: str | None = None
    file: str | None = None
    command: list[str] | None = None
    files: dict[str, str] | None = None
    config: dict[str, Any] = attrs.field(factory=dict)
    inputs: list[str] = attrs.field(factory=lambda: ["in"])
    outputs: list[str] = attrs.field(factory=lambda: ["out"])
    timeout: float = DEFAULT_TIMEOUT
    requirements: list[str] | None = None
    packages: list[str] | None = None
    placement: dict[str, Any] | None = None


@attrs.define
class FlowDocument:
    """A flow document's shape: what the converter structures, and what the APIs
    document (their OpenAPI schemas are generated from these two classes)."""

    fifoflow: int
    id: str
    modules: list[ModuleDocument]
    wires: list[str] = attrs.field(factory=list)
    description: str | None = None
    requirements: list[str] | None = None
    packages: list[str] | None = None
    exits: list[str] | None = None
    #: "checkpoint" (state written about once a second) or "journal" (every accepted
    #: message and state change durable before it is acknowledged: runner/JOURNAL.md);
    #: absent: the runner's default (``--durability``)
    durability: str | None = None


#: what a flow's ``durability`` may say
DURABILITIES = ("checkpoint", "journal")

_CONVERTER = make_converter()


def parse_flow(
    data: bytes | str | Mapping[str, Any],
    *,
    base_dir: Path | None,
    runtimes: Collection[str],
    source_name: str = "flow",
) -> Flow:
    """Parse and validate a flow document; module files are read relative to ``base_dir``."""
    if isinstance(data, (bytes, str)):
        _check_size(len(data.encode() if isinstance(data, str) else data), source_name)
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise FlowError([Problem("", f"{source_name} is not valid JSON: {exc}")]) from None
    else:
        raw = dict(data)
    if not isinstance(raw, dict):
        raise FlowError([Problem("", f"a flow must be a JSON object, got {json_type(raw)}")])
    if not isinstance(data, (bytes, str)):
        # A document that came as data (over an API) is measured as its JSON, so the
        # same flow is refused the same way wherever it comes from.
        try:
            _check_size(len(orjson.dumps(raw)), source_name)
        except (TypeError, orjson.JSONEncodeError):
            pass  # the value checks below name what cannot be encoded
    modules = raw.get("modules")
    if isinstance(modules, list) and len(modules) > MAX_MODULES:
        raise FlowError(
            [Problem("modules", f"{len(modules)} modules; a flow has at most {MAX_MODULES}")]
        )
    version = raw.get("fifoflow")
    if version is None:
        raise FlowError(
            [Problem("fifoflow", f'missing format version (add "fifoflow": {FORMAT_VERSION})')]
        )
    if version != FORMAT_VERSION:
        raise FlowError(
            [
                Problem(
                    "fifoflow",
                    f"unsupported format version {version!r} (this fifoflow reads version {FORMAT_VERSION})",
                )
            ]
        )
    nulls = [
        Problem(key, "null is not allowed here: leave the field out")
        for key, v in raw.items()
        if v is None
    ]
    for index, module in enumerate(raw.get("modules") or []):
        if isinstance(module, dict):
            nulls += [
                Problem(f"modules[{index}].{key}", "null is not allowed here: leave the field out")
                for key, v in module.items()
                if v is None
            ]
    if nulls:
        raise FlowError(nulls)
    try:
        doc = _CONVERTER.structure(raw, FlowDocument)
    except (
        cattrs.ClassValidationError,
        cattrs.IterableValidationError,
        cattrs.ForbiddenExtraKeysError,
    ) as exc:
        raise FlowError(structure_problems(exc)) from None
    return _validate(doc, base_dir=base_dir, runtimes=runtimes)


def _check_size(size: int, source_name: str) -> None:
    if size > MAX_DOCUMENT:
        raise FlowError(
            [
                Problem(
                    "",
                    f"{source_name} is {human_size(size)}; a flow document is at most"
                    f" {format_size(MAX_DOCUMENT)}",
                )
            ]
        )


def inside_folder(folder: Path, name: str) -> Path | None:
    """``name`` resolved against ``folder`` (symlinks followed), or None when the result
    is not inside the resolved ``folder``: a flow reads files from its own folder only
    (no ``..`` out of it, no absolute path elsewhere, no symlink pointing out)."""
    root = folder.resolve()
    try:
        path = (root / name).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return None
    return path if path.is_relative_to(root) else None


def load_flow(path: Path | str, *, runtimes: Collection[str]) -> Flow:
    """Read a flow file (and its module files) and validate it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FlowError([Problem("", f"cannot read flow file {path}: {exc.strerror}")]) from None
    return parse_flow(
        data, base_dir=path.resolve().parent, runtimes=runtimes, source_name=str(path)
    )


def _validate(doc: FlowDocument, *, base_dir: Path | None, runtimes: Collection[str]) -> Flow:
    problems: list[Problem] = []
    if (too_long := _too_long(doc.id)) is not None:
        problems.append(Problem("id", too_long))
    elif not ID_PATTERN.match(doc.id):
        problems.append(
            Problem(
                "id",
                f"invalid flow id {doc.id!r} (letters, digits, '_' and '-'; not starting with a digit)",
            )
        )
    known = ", ".join(sorted(runtimes))
    first_index: dict[str, int] = {}
    modules: list[Module] = []
    for index, m in enumerate(doc.modules):
        at = f"modules[{index}]"
        if (too_long := _too_long(m.id)) is not None:
            problems.append(Problem(f"{at}.id", too_long))
        elif not ID_PATTERN.match(m.id):
            problems.append(
                Problem(
                    f"{at}.id",
                    f"invalid module id {m.id!r} (letters, digits, '_' and '-'; not starting with a digit)",
                )
            )
        elif m.id in first_index:
            problems.append(
                Problem(
                    f"{at}.id",
                    f"duplicate module id {m.id!r} (first at modules[{first_index[m.id]}])",
                )
            )
        else:
            first_index[m.id] = index
        if m.runtime not in runtimes:
            problems.append(
                Problem(f"{at}.runtime", f"unknown runtime {m.runtime!r} (known: {known})")
            )
        for kind, ports in (("inputs", m.inputs), ("outputs", m.outputs)):
            seen: set[str] = set()
            for pi, port in enumerate(ports):
                if (too_long := _too_long(port)) is not None:
                    problems.append(Problem(f"{at}.{kind}[{pi}]", too_long))
                elif not ID_PATTERN.match(port):
                    problems.append(Problem(f"{at}.{kind}[{pi}]", f"invalid port name {port!r}"))
                if port in seen:
                    problems.append(Problem(f"{at}.{kind}[{pi}]", f"duplicate port {port!r}"))
                seen.add(port)
        if not (0 < m.timeout <= MAX_TIMEOUT):
            problems.append(
                Problem(
                    f"{at}.timeout",
                    f"must be a positive number of seconds, at most {MAX_TIMEOUT:g}, got {m.timeout:g}",
                )
            )
        if m.config and len(orjson.dumps(m.config)) > MAX_CONFIG:
            problems.append(
                Problem(f"{at}.config", f"larger than {format_size(MAX_CONFIG)} as JSON")
            )
        source: str | None = None
        filename = f"{doc.id}/{m.id}"
        if m.runtime == "exec":
            if m.command is None or not m.command:
                problems.append(
                    Problem(
                        f"{at}.command",
                        'exec modules need a command (an argv list, e.g. ["sh", "step.sh"])',
                    )
                )
            for field in ("code", "file"):
                if getattr(m, field) is not None:
                    problems.append(
                        Problem(f"{at}.{field}", "exec modules take a command, not code or file")
                    )
            problems += files_problems(m.files or {}, at)
        else:
            if m.files is not None:
                problems.append(
                    Problem(
                        f"{at}.files",
                        f"only exec modules take files ({m.runtime} modules take code or file)",
                    )
                )
            if m.command is not None:
                problems.append(
                    Problem(
                        f"{at}.command",
                        f"only exec modules take a command ({m.runtime} modules take code or file)",
                    )
                )
            if m.code is not None and m.file is not None:
                problems.append(Problem(f"{at}", "give either code or file, not both"))
            elif m.code is None and m.file is None:
                problems.append(Problem(f"{at}", "missing code: give inline code or a file"))
            elif m.code is not None:
                source = m.code
            else:
                assert m.file is not None
                if base_dir is None:
                    problems.append(
                        Problem(f"{at}.file", "a file reference needs a flow loaded from a file")
                    )
                else:
                    path = inside_folder(base_dir, m.file)
                    if path is None:
                        problems.append(
                            Problem(
                                f"{at}.file",
                                f"{m.file} is outside the flow's folder {base_dir.resolve()}",
                            )
                        )
                    else:
                        try:
                            source = path.read_text(encoding="utf-8")
                            filename = str(path)
                        except FileNotFoundError:
                            problems.append(Problem(f"{at}.file", f"file not found: {path}"))
                        except (OSError, UnicodeDecodeError) as exc:
                            problems.append(Problem(f"{at}.file", f"cannot read {path}: {exc}"))
        declared, merged = _requirements(m, at, doc, problems)
        labels: dict[str, str] = {}
        cpus, memory = 0.0, 0
        if m.placement is not None:
            extra = sorted(set(m.placement) - {"labels", "cpus", "memory"})
            if extra:
                problems.append(
                    Problem(
                        f"{at}.placement",
                        f"unknown field(s): {', '.join(extra)} (known: labels, cpus, memory)",
                    )
                )
            raw_labels = m.placement.get("labels") or {}
            if not isinstance(raw_labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in raw_labels.items()
            ):
                problems.append(
                    Problem(f"{at}.placement.labels", "labels must be an object of strings")
                )
            else:
                labels = dict(raw_labels)
            raw_cpus = m.placement.get("cpus", 0)
            if isinstance(raw_cpus, bool) or not isinstance(raw_cpus, int | float) or raw_cpus < 0:
                problems.append(
                    Problem(f"{at}.placement.cpus", f"cpus must be a number >= 0, got {raw_cpus!r}")
                )
            else:
                cpus = float(raw_cpus)
            try:
                memory = parse_size(m.placement.get("memory", 0))
            except ValueError as exc:
                problems.append(Problem(f"{at}.placement.memory", str(exc)))
        modules.append(
            Module(
                id=m.id,
                runtime=m.runtime,
                code=m.code,
                file=m.file,
                command=tuple(m.command) if m.command is not None else None,
                files=dict(m.files or {}),
                config=m.config,
                inputs=tuple(m.inputs),
                outputs=tuple(m.outputs),
                timeout=m.timeout,
                source=source,
                filename=filename,
                cwd=base_dir,
                requirements=merged,
                declared=declared,
                labels=labels,
                cpus=cpus,
                memory=memory,
            )
        )
    by_id = {m.id: m for m in modules}
    names = ", ".join(by_id) or "none"
    wires: list[Wire] = []
    seen_wires: dict[Wire, int] = {}
    for index, text in enumerate(doc.wires):
        at = f"wires[{index}]"
        try:
            wire = Wire.parse(text)
        except ValueError as exc:
            problems.append(Problem(at, str(exc)))
            continue
        ok = True
        src, dst = by_id.get(wire.src), by_id.get(wire.dst)
        if src is None:
            problems.append(Problem(at, f"module {wire.src!r} does not exist (modules: {names})"))
            ok = False
        elif wire.src_port not in src.outputs:
            problems.append(
                Problem(
                    at,
                    f"{wire.src!r} has no output port {wire.src_port!r} (outputs: {', '.join(src.outputs)})",
                )
            )
            ok = False
        if dst is None:
            problems.append(Problem(at, f"module {wire.dst!r} does not exist (modules: {names})"))
            ok = False
        elif wire.dst_port not in dst.inputs:
            problems.append(
                Problem(
                    at,
                    f"{wire.dst!r} has no input port {wire.dst_port!r} (inputs: {', '.join(dst.inputs)})",
                )
            )
            ok = False
        if wire in seen_wires:
            problems.append(
                Problem(at, f"duplicate wire {str(wire)!r} (first at wires[{seen_wires[wire]}])")
            )
            ok = False
        if ok:
            seen_wires[wire] = index
            wires.append(wire)
    exits: list[tuple[str, str]] = []
    for index, text in enumerate(doc.exits or ()):
        at = f"exits[{index}]"
        module_id, dot, port = text.rpartition(".")
        src = by_id.get(module_id)
        if not dot or not module_id or not port:
            problems.append(Problem(at, f"not an output port: {text!r} (expected 'module.port')"))
        elif src is None:
            problems.append(Problem(at, f"module {module_id!r} does not exist (modules: {names})"))
        elif port not in src.outputs:
            problems.append(
                Problem(
                    at,
                    f"{module_id!r} has no output port {port!r} (outputs: {', '.join(src.outputs)})",
                )
            )
        elif (module_id, port) in exits:
            problems.append(Problem(at, f"duplicate exit {text!r}"))
        else:
            exits.append((module_id, port))
    flow_reqs: dict[str, tuple[str, ...]] = {}
    for field, runtime in (("requirements", "python"), ("packages", "node")):
        specs = []
        for i, spec in enumerate(getattr(doc, field) or ()):
            try:
                specs.append(normalize(runtime, spec))
            except ValueError as exc:
                problems.append(Problem(f"{field}[{i}]", str(exc)))
        flow_reqs[field] = tuple(specs)
    if doc.durability is not None and doc.durability not in DURABILITIES:
        problems.append(
            Problem(
                "durability",
                f"unknown durability {doc.durability!r} (known: {', '.join(DURABILITIES)})",
            )
        )
    if problems:
        raise FlowError(problems)
    return Flow(
        id=doc.id,
        modules=with_builds(modules),
        wires=tuple(wires),
        description=doc.description,
        base_dir=base_dir,
        requirements=flow_reqs["requirements"],
        packages=flow_reqs["packages"],
        exits=tuple(exits),
        durability=doc.durability,
    )


#: runtimes whose hosts are built from their modules' sources (one binary per set)
COMPILED_RUNTIMES = frozenset({"go"})


def with_builds(modules: list[Module]) -> tuple[Module, ...]:
    """``modules`` with ``build`` set on those of compiled runtimes: a hash of the set of
    sources of the flow's modules in that runtime (``Module.host``)."""
    sets: dict[str, set[str]] = {}
    for m in modules:
        if m.runtime in COMPILED_RUNTIMES:
            sets.setdefault(m.runtime, set()).add(m.source or "")
    if not sets:
        return tuple(modules)
    keys = {
        runtime: hashlib.sha256("\0".join(sorted(sources)).encode()).hexdigest()[:16]
        for runtime, sources in sets.items()
    }
    return tuple(
        attrs.evolve(m, build=keys[m.runtime]) if m.runtime in keys else m for m in modules
    )


def _too_long(ident: str) -> str | None:
    """The problem with an id longer than :data:`~.limits.MAX_ID` (the id itself is left
    out of the message: it is too long to read), or None."""
    if len(ident) > MAX_ID:
        return f"{len(ident)} characters, at most {MAX_ID}"
    return None


def file_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a file a module carries (None: it can): a plain relative
    path inside the module's working directory."""
    if not name or "\0" in name:
        return "a file name must be a non-empty path without NUL"
    if name.startswith("/"):
        return f"{name!r} is absolute: give a path relative to the module's folder"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return f"{name!r} is not a plain relative path (no '.', '..' or empty parts)"
    return None


def files_problems(files: Mapping[str, str], at: str) -> list[Problem]:
    problems = []
    total = 0
    for name, text in files.items():
        why = file_name_problem(name)
        if why is not None:
            problems.append(Problem(f"{at}.files", why))
        total += len(text.encode("utf-8", "surrogatepass"))
    for name in files:
        if file_name_problem(name) is not None:
            continue
        parents = ["/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1)]
        clash = next((p for p in parents if p in files), None)
        if clash is not None:
            problems.append(Problem(f"{at}.files", f"{clash!r} is a file and a folder of {name!r}"))
    if total > MAX_MODULE_FILES:
        problems.append(
            Problem(
                f"{at}.files",
                f"{total} bytes of files: a module carries at most "
                f"{format_size(MAX_MODULE_FILES)} (MAX_MODULE_FILES)",
            )
        )
    return problems


#: which field lists a runtime's requirements
REQUIREMENT_FIELD = {"python": "requirements", "node": "packages"}


def _requirements(
    m: ModuleDocument, at: str, doc: FlowDocument, problems: list[Problem]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(what the module declares, normalized; with the flow's for its runtime merged in)."""
    own_field = REQUIREMENT_FIELD.get(m.runtime)
    for field in ("requirements", "packages"):
        if getattr(m, field) is not None and field != own_field:
            wanted = f"{own_field}" if own_field else "none"
            problems.append(
                Problem(
                    f"{at}.{field}", f"{m.runtime} modules take no {field} (they take: {wanted})"
                )
            )
    if own_field is None:
        return (), ()
    declared = []
    for i, spec in enumerate(getattr(m, own_field) or ()):
        try:
            declared.append(normalize(m.runtime, spec))
        except ValueError as exc:
            problems.append(Problem(f"{at}.{own_field}[{i}]", str(exc)))
    flow_level = []
    for spec in getattr(doc, own_field) or ():
        try:
            flow_level.append(normalize(m.runtime, spec))
        except ValueError:
            pass  # reported once, at the flow's field
    return tuple(declared), tuple(sorted(set(flow_level) | set(declared)))


def dump_flow(flow: Flow, *, inline: bool = False) -> bytes:
    """Stable JSON for git: fixed key order, defaults omitted, trailing newline.

    Module code that came from a file stays a ``file`` reference, unless ``inline``: then
    the file's text is written as ``code``, so the document stands alone (what is sent to
    a runner over HTTP, and what a runner stores)."""
    doc: dict[str, Any] = {"fifoflow": flow.fifoflow, "id": flow.id}
    if flow.description is not None:
        doc["description"] = flow.description
    if flow.requirements:
        doc["requirements"] = list(flow.requirements)
    if flow.packages:
        doc["packages"] = list(flow.packages)
    if flow.durability is not None:
        doc["durability"] = flow.durability
    modules = []
    for m in flow.modules:
        entry: dict[str, Any] = {"id": m.id, "runtime": m.runtime}
        if m.file is not None and not (inline and m.source is not None):
            entry["file"] = m.file
        elif m.code is not None:
            entry["code"] = m.code
        elif m.source is not None:
            entry["code"] = m.source
        if m.command is not None:
            entry["command"] = list(m.command)
        if m.files:
            entry["files"] = {name: m.files[name] for name in sorted(m.files)}
        if m.config:
            entry["config"] = _sorted(m.config)
        if tuple(m.inputs) != ("in",):
            entry["inputs"] = list(m.inputs)
        if tuple(m.outputs) != ("out",):
            entry["outputs"] = list(m.outputs)
        if m.timeout != DEFAULT_TIMEOUT:
            entry["timeout"] = int(m.timeout) if float(m.timeout).is_integer() else m.timeout
        if m.declared:
            entry[REQUIREMENT_FIELD[m.runtime]] = list(m.declared)
        placement: dict[str, Any] = {}
        if m.labels:
            placement["labels"] = dict(sorted(m.labels.items()))
        if m.cpus:
            placement["cpus"] = int(m.cpus) if m.cpus.is_integer() else m.cpus
        if m.memory:
            placement["memory"] = format_size(m.memory)
        if placement:
            entry["placement"] = placement
        modules.append(entry)
    doc["modules"] = modules
    doc["wires"] = [str(w) for w in flow.wires]
    if flow.exits:
        doc["exits"] = [f"{m}.{p}" for m, p in flow.exits]
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value
