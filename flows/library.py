"""Components: module templates an IDE places as graph nodes (the FBP protocol's word).

A component is a named piece of module code with its ports: ``core/Repeat`` is the file
``components/core/Repeat.py`` shipped with fifoflow. Its ports and description are
annotations in its leading comments, so the file stays an ordinary module::

    # @description Sends every packet it receives on unchanged.
    # @inports in
    # @outports out

The language follows the file's suffix: ``.py`` python, ``.js`` node, ``.sh`` exec (run
by ``sh``, the script carried as the module's file). Components an IDE sends
(``component:source``) are kept in a folder of their own (a runner's state dir), which
shadows the shipped ones of the same name. No I/O but reading and writing those files.

Error handling: :class:`ComponentError` (a ValueError) names what is wrong with a name,
a language or a port annotation.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from .model import ID_PATTERN

__all__ = ["BUILTIN", "LANGUAGES", "Component", "ComponentError", "ComponentLibrary"]

BUILTIN = Path(__file__).resolve().parent / "components"

#: language (as an IDE names it) -> (runtime, file suffix)
LANGUAGES: dict[str, tuple[str, str]] = {
    "python": ("python", ".py"),
    "javascript": ("node", ".js"),
    "node": ("node", ".js"),
    "exec": ("exec", ".sh"),
    "sh": ("exec", ".sh"),
    "shell": ("exec", ".sh"),
}
_SUFFIXES = {".py": ("python", "python"), ".js": ("node", "javascript"), ".sh": ("exec", "exec")}
_ANNOTATION = re.compile(r"^\s*(?:#|//)\s*@(description|inports|outports)\b[ \t]*(.*)$", re.M)
_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
EXEC_SCRIPT = "component.sh"


class ComponentError(ValueError):
    """A component name, language or annotation that cannot be used."""


@attrs.frozen
class Component:
    #: ``library/Name``
    name: str
    #: the fifoflow runtime its code runs in, and the language an IDE sees
    runtime: str
    language: str
    code: str
    inputs: tuple[str, ...] = ("in",)
    outputs: tuple[str, ...] = ("out",)
    description: str = ""

    @property
    def library(self) -> str:
        return self.name.rpartition("/")[0]

    @property
    def short_name(self) -> str:
        return self.name.rpartition("/")[2]

    @classmethod
    def from_code(cls, name: str, language: str, code: str) -> Component:
        """Parse the annotations of ``code``; ports default to ``in`` / ``out``."""
        check_name(name)
        if language not in LANGUAGES:
            known = ", ".join(sorted(LANGUAGES))
            raise ComponentError(f"unsupported language {language!r} (known: {known})")
        runtime = LANGUAGES[language][0]
        found: dict[str, str] = {}
        for key, value in _ANNOTATION.findall(code):
            found.setdefault(key, value.strip())
        ports: dict[str, tuple[str, ...]] = {}
        for key, default in (("inports", ("in",)), ("outports", ("out",))):
            if key not in found:
                ports[key] = default
                continue
            names = tuple(found[key].replace(",", " ").split())
            for port in names:
                if not ID_PATTERN.match(port):
                    raise ComponentError(f"{name}: @{key}: invalid port name {port!r}")
            if len(set(names)) != len(names):
                raise ComponentError(f"{name}: @{key}: a port is listed twice")
            ports[key] = names
        language = {"python": "python", "node": "javascript", "exec": "exec"}[runtime]
        return cls(
            name=name,
            runtime=runtime,
            language=language,
            code=code,
            inputs=ports["inports"],
            outputs=ports["outports"],
            description=found.get("description", ""),
        )

    def module_fields(self) -> dict[str, object]:
        """What a flow document's module needs from this component (all but its id)."""
        fields: dict[str, object] = {"runtime": self.runtime}
        if self.runtime == "exec":
            fields["command"] = ["sh", EXEC_SCRIPT]
            fields["files"] = {EXEC_SCRIPT: self.code}
        else:
            fields["code"] = self.code
        if self.inputs != ("in",):
            fields["inputs"] = list(self.inputs)
        if self.outputs != ("out",):
            fields["outputs"] = list(self.outputs)
        return fields


def check_name(name: str) -> None:
    library, _, short = name.rpartition("/")
    parts = [*library.split("/"), short] if library else [short]
    if not library or not all(_PART.match(p) and p not in (".", "..") for p in parts):
        raise ComponentError(
            f"invalid component name {name!r} (expected 'library/Name': letters, digits, '_', '-', '.')"
        )


class ComponentLibrary:
    """The shipped components, and those kept in ``user_dir`` (None: read-only)."""

    def __init__(self, user_dir: Path | None = None, builtin: Path = BUILTIN) -> None:
        self.user_dir = user_dir
        self.builtin = builtin
        #: path -> ((mtime_ns, size), component): files are parsed again only when changed
        self._parsed: dict[Path, tuple[tuple[int, int], Component]] = {}

    def _scan(self, root: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        if not root.is_dir():
            return found
        for path in sorted(root.rglob("*")):
            if path.suffix in _SUFFIXES and path.is_file():
                name = path.relative_to(root).with_suffix("").as_posix()
                found[name] = path
        return found

    def _paths(self) -> dict[str, Path]:
        paths = self._scan(self.builtin)
        if self.user_dir is not None:
            paths.update(self._scan(self.user_dir))
        return paths

    def names(self) -> list[str]:
        return sorted(self._paths())

    def get(self, name: str) -> Component:
        path = self._paths().get(name)
        if path is None:
            raise KeyError(name)
        return self._read(name, path)

    def _read(self, name: str, path: Path) -> Component:
        stat = path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._parsed.get(path)
        if cached is not None and cached[0] == key and cached[1].name == name:
            return cached[1]
        component = Component.from_code(name, _SUFFIXES[path.suffix][1], path.read_text())
        self._parsed[path] = (key, component)
        return component

    def components(self) -> list[Component]:
        return list(self.by_name().values())

    def by_name(self) -> dict[str, Component]:
        """Every component by name, from one look at the folders."""
        return {name: self._read(name, path) for name, path in sorted(self._paths().items())}

    def user_names(self) -> list[str]:
        return sorted(self._scan(self.user_dir)) if self.user_dir is not None else []

    def remove(self, name: str) -> None:
        """Forget an IDE's component (a shipped one of that name shows again)."""
        if self.user_dir is None:
            return
        for suffix in _SUFFIXES:
            (self.user_dir / (name + suffix)).unlink(missing_ok=True)

    def save(self, component: Component) -> None:
        """Keep an IDE's component (replacing one of another language of the same name)."""
        if self.user_dir is None:
            raise ComponentError("this runtime keeps no components of its own (read-only)")
        suffix = LANGUAGES[component.language][1]
        target = self.user_dir / (component.name + suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        for other in _SUFFIXES:
            stale = self.user_dir / (component.name + other)
            if other != suffix and stale.exists():
                stale.unlink()
        tmp = target.with_suffix(suffix + ".tmp")
        tmp.write_text(component.code)
        tmp.replace(target)
