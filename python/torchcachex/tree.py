"""Module outputs <-> named leaves.

A module output is a *pytree*: tensors and other values held in dicts, tuples and
lists. The cache stores it as a flat list of named **leaves** (one Arrow column
group each) plus a JSON **structure spec** that says how to rebuild the tree.

Rules
-----
* A ``torch.Tensor`` is a tensor leaf.
* A ``dict`` (``str`` keys only), ``tuple`` or ``list`` that contains at least one
  tensor is a container: its items are flattened recursively.
* Anything else -- including a dict/tuple/list that holds no tensor at all, such
  as ``{"width": 224}`` -- is one non-tensor ("blob") leaf.
* Namedtuples are flattened as tuples and come back as plain tuples; other
  ``Mapping`` types that are ``dict`` subclasses (``OrderedDict``) come back as
  plain ``dict``.

Leaf names follow the original torchcachex column layout: a single tensor (or a
single non-tensor value) is the leaf ``""``; dict items are named by their key
(``"visual"``); tuple/list items are ``"item0"``, ``"item1"``; nested items join
the path with ``"."`` (``"a.b"``, ``"a.item0"``).

The structure spec is JSON-able::

    {"t": "leaf", "name": "visual"}
    {"t": "dict", "items": [["visual", <node>], ["metadata", <node>]]}
    {"t": "tuple", "items": [<node>, ...]}      # also "list"
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Sequence

import torch

__all__ = [
    "Flattened",
    "flatten",
    "unflatten",
    "spec_from_schema",
    "spec_to_json",
    "spec_leaf_names",
    "leaf_map",
    "structures_equal",
]

Spec = Dict[str, Any]

TENSOR = "tensor"
BLOB = "blob"


@dataclass(frozen=True)
class Flattened:
    """A module output split into named leaves.

    Attributes:
        names: leaf names, in flattening order.
        values: the leaf values (tensors or other Python values), same order.
        output_structure: top-level kind: "tensor", "dict", "tuple", "list" or "blob".
        spec: the structure spec that rebuilds the output from the leaves.
    """

    names: List[str]
    values: List[Any]
    output_structure: str
    spec: Spec

    def kinds(self) -> List[str]:
        """The kind of every leaf: "tensor" or "blob"."""
        return [TENSOR if isinstance(v, torch.Tensor) else BLOB for v in self.values]


def _contains_tensor(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, dict):
        return any(_contains_tensor(v) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return any(_contains_tensor(v) for v in obj)
    return False


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _flatten_node(obj: Any, name: str, names: List[str], values: List[Any]) -> Spec:
    if isinstance(obj, dict) and _contains_tensor(obj):
        items = []
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"module output dicts that hold tensors must have str keys; got key {key!r} "
                    f"of type {type(key).__name__} at {name or '<output>'!r}"
                )
            items.append([key, _flatten_node(value, _join(name, key), names, values)])
        return {"t": "dict", "items": items}
    if isinstance(obj, (tuple, list)) and _contains_tensor(obj):
        kind = "list" if isinstance(obj, list) else "tuple"
        items = [_flatten_node(v, _join(name, f"item{i}"), names, values) for i, v in enumerate(obj)]
        return {"t": kind, "items": items}
    names.append(name)
    values.append(obj)
    return {"t": "leaf", "name": name}


def flatten(output: Any) -> Flattened:
    """Splits a module output into named leaves and a structure spec.

    Raises:
        TypeError: a dict holding tensors has a non-``str`` key.
        ValueError: two leaves would get the same name (e.g. keys ``"a.b"`` and
            ``"a"`` -> ``"b"`` in one output).
    """
    names: List[str] = []
    values: List[Any] = []
    spec = _flatten_node(output, "", names, values)
    seen: set = set()
    for dup in names:
        if dup in seen:
            raise ValueError(
                f"module output has two leaves named {dup!r}; rename dict keys so that joined "
                "paths (with '.') are unique"
            )
        seen.add(dup)
    if spec["t"] == "leaf":
        structure = TENSOR if isinstance(output, torch.Tensor) else BLOB
    else:
        structure = spec["t"]
    return Flattened(names, values, structure, spec)


def unflatten(spec: Spec, leaf: Callable[[str], Any]) -> Any:
    """Rebuilds an output from a structure spec; ``leaf(name)`` supplies each leaf."""
    kind = spec["t"]
    if kind == "leaf":
        return leaf(spec["name"])
    if kind == "dict":
        return {key: unflatten(node, leaf) for key, node in spec["items"]}
    if kind == "tuple":
        return tuple(unflatten(node, leaf) for node in spec["items"])
    if kind == "list":
        return [unflatten(node, leaf) for node in spec["items"]]
    raise ValueError(f"unknown node type {kind!r} in cache structure spec")


def spec_to_json(spec: Spec) -> str:
    """Compact JSON text of a structure spec (stored in the cache schema)."""
    return json.dumps(spec, separators=(",", ":"), ensure_ascii=False)


def spec_leaf_names(spec: Spec) -> List[str]:
    """The leaf names referenced by a spec, in order."""
    out: List[str] = []

    def walk(node: Spec) -> None:
        if node["t"] == "leaf":
            out.append(node["name"])
        elif node["t"] == "dict":
            for _, child in node["items"]:
                walk(child)
        else:
            for child in node["items"]:
                walk(child)

    walk(spec)
    return out


def spec_from_schema(output_structure: str, leaf_names: Sequence[str], structure: str) -> Spec:
    """The structure spec of a cache schema.

    ``structure`` is the JSON text this package stored; caches written by the
    original implementation have ``""``, and their spec is derived from
    ``output_structure`` and the leaf names (a dict keyed by leaf name, or a
    tuple/list of the leaves in order).
    """
    if structure:
        spec = json.loads(structure)
        if sorted(spec_leaf_names(spec)) != sorted(leaf_names):
            raise ValueError("cache structure spec does not match its leaves")
        return spec
    if output_structure in (TENSOR, BLOB):
        if len(leaf_names) != 1:
            raise ValueError(
                f"cache with output_structure {output_structure!r} must have one leaf, "
                f"has {len(leaf_names)}"
            )
        return {"t": "leaf", "name": leaf_names[0]}
    if output_structure == "dict":
        return {"t": "dict", "items": [[n, {"t": "leaf", "name": n}] for n in leaf_names]}
    if output_structure in ("tuple", "list"):
        return {"t": output_structure, "items": [{"t": "leaf", "name": n} for n in leaf_names]}
    raise ValueError(f"unknown output_structure {output_structure!r} in cache schema")


def leaf_map(spec: Spec, values: Mapping[str, Any]) -> Any:
    """Rebuilds an output from a spec and a ``{leaf name: value}`` mapping."""
    return unflatten(spec, values.__getitem__)


def structures_equal(a: Spec, b: Spec) -> bool:
    """True if two specs describe the same output structure."""
    return _canon(a) == _canon(b)


def _canon(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _canon(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_canon(v) for v in node]
    return node
