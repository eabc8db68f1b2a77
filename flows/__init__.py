"""fifoflow.flows: what a flow is — the model, its JSON form, validation.

Public names: :class:`Flow`, :class:`Module`, :class:`Wire`, :func:`load_flow`,
:func:`parse_flow`, :func:`dump_flow`, :func:`bundle_files`, :func:`make_converter`, :class:`FlowError`,
:class:`Problem`.
"""

from .bundle import bundle_files
from .codec import dump_flow, load_flow, parse_flow
from .converter import make_converter
from .errors import FlowError, Problem
from .model import FORMAT_VERSION, Flow, Module, Wire

__all__ = [
    "FORMAT_VERSION",
    "Flow",
    "FlowError",
    "Module",
    "Problem",
    "Wire",
    "bundle_files",
    "dump_flow",
    "load_flow",
    "make_converter",
    "parse_flow",
]
