"""A flow bundle: the flow, with the files its exec modules' commands name.

A flow loaded from a file runs its exec modules in the flow's folder, so ``["sh",
"wrap.sh"]`` finds ``wrap.sh`` there. A flow sent to a runner (``fifoflow flow add``,
``fifoflow dispatcher deploy``) has no folder: :func:`bundle_files` puts the files the
command names into the module's ``files`` (name -> UTF-8 text), and the runner writes them
into the module's private working directory (``runner/workdirs.py``).

Which files: every argument of the command (the program included) that names, as a plain
relative path, an existing file inside the flow's folder (:func:`.codec.inside_folder`:
symlinks resolved, nothing outside). Absolute paths and ``..`` name things on the
runner's machine and are left alone. Files the document already lists are kept as they
are. Only text travels: a named file that is not UTF-8 is an error naming the argument.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

import attrs

from .codec import file_name_problem, files_problems, inside_folder
from .errors import FlowError, Problem

if TYPE_CHECKING:
    from .model import Flow

__all__ = ["bundle_files"]


def bundle_files(flow: Flow) -> Flow:
    """``flow`` with its exec modules' ``files`` filled from their folder (see above);
    :class:`FlowError` names every file that cannot travel."""
    problems: list[Problem] = []
    modules = []
    for index, module in enumerate(flow.modules):
        if module.runtime != "exec" or module.cwd is None or not module.command:
            modules.append(module)
            continue
        at = f"modules[{index}]"
        files = dict(module.files)
        for ai, arg in enumerate(module.command):
            name = posixpath.normpath(arg) if arg else arg
            if name in files or file_name_problem(name) is not None or ".." in arg.split("/"):
                continue
            path = inside_folder(module.cwd, name)
            if path is None or not path.is_file():
                continue
            try:
                files[name] = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                problems.append(
                    Problem(
                        f"{at}.command[{ai}]",
                        f"{arg} is not UTF-8 text: only text files travel with a flow "
                        "(install programs on the runner)",
                    )
                )
            except OSError as exc:
                problems.append(Problem(f"{at}.command[{ai}]", f"cannot read {path}: {exc}"))
        problems += files_problems(files, at)
        modules.append(attrs.evolve(module, files=files))
    if problems:
        raise FlowError(problems)
    return attrs.evolve(flow, modules=tuple(modules))
