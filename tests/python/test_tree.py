"""Output pytrees <-> named leaves: names follow the original column layout."""

from __future__ import annotations

import collections
import json

import pytest
import torch

from torchcachex import tree


def _rebuild(flat: tree.Flattened):
    return tree.leaf_map(flat.spec, dict(zip(flat.names, flat.values)))


def test_single_tensor_is_the_unnamed_leaf():
    t = torch.zeros(2, 3)
    flat = tree.flatten(t)
    assert flat.names == [""]
    assert flat.output_structure == "tensor"
    assert flat.kinds() == ["tensor"]
    assert _rebuild(flat) is t


def test_dict_leaves_are_named_by_key_in_order():
    out = {"visual": torch.ones(2), "semantic": torch.zeros(2), "metadata": {"width": 224}}
    flat = tree.flatten(out)
    assert flat.names == ["visual", "semantic", "metadata"]
    assert flat.kinds() == ["tensor", "tensor", "blob"]
    assert flat.output_structure == "dict"
    rebuilt = _rebuild(flat)
    assert list(rebuilt) == ["visual", "semantic", "metadata"]
    assert rebuilt["metadata"] == {"width": 224}


@pytest.mark.parametrize("container,kind", [(tuple, "tuple"), (list, "list")])
def test_sequence_leaves_are_items(container, kind):
    out = container([torch.ones(1), torch.zeros(1), "tag"])
    flat = tree.flatten(out)
    assert flat.names == ["item0", "item1", "item2"]
    assert flat.output_structure == kind
    rebuilt = _rebuild(flat)
    assert type(rebuilt) is container and rebuilt[2] == "tag"


def test_nested_names_join_the_path_with_dots():
    out = {"a": {"b": torch.ones(1), "c": (torch.ones(1), [torch.ones(1)])}, "d": torch.ones(1)}
    flat = tree.flatten(out)
    assert flat.names == ["a.b", "a.c.item0", "a.c.item1.item0", "d"]
    rebuilt = _rebuild(flat)
    assert isinstance(rebuilt["a"]["c"], tuple) and isinstance(rebuilt["a"]["c"][1], list)


def test_containers_without_tensors_are_one_non_tensor_leaf():
    flat = tree.flatten({"x": torch.ones(1), "meta": {"sizes": [1, 2, 3], "name": "n"}})
    assert flat.names == ["x", "meta"]
    assert flat.values[1] == {"sizes": [1, 2, 3], "name": "n"}


def test_output_without_tensors_is_a_blob():
    flat = tree.flatten({"width": 224})
    assert flat.names == [""] and flat.output_structure == "blob"


def test_namedtuple_comes_back_as_tuple():
    Pair = collections.namedtuple("Pair", "x y")
    flat = tree.flatten(Pair(torch.ones(1), torch.zeros(1)))
    assert flat.output_structure == "tuple"
    rebuilt = _rebuild(flat)
    assert type(rebuilt) is tuple and len(rebuilt) == 2


def test_non_str_dict_keys_are_rejected():
    with pytest.raises(TypeError, match="str keys"):
        tree.flatten({1: torch.ones(1)})


def test_colliding_leaf_names_are_rejected():
    with pytest.raises(ValueError, match="two leaves named 'a.b'"):
        tree.flatten({"a.b": torch.ones(1), "a": {"b": torch.ones(1)}})


def test_spec_round_trips_through_json():
    flat = tree.flatten({"a": (torch.ones(1), {"b": torch.ones(1)})})
    text = tree.spec_to_json(flat.spec)
    spec = tree.spec_from_schema("dict", flat.names, text)
    assert spec == json.loads(text)
    assert tree.structures_equal(spec, flat.spec)


@pytest.mark.parametrize(
    "structure,names,expected",
    [
        ("tensor", [""], torch.ones(1)),
        ("blob", [""], 5),
        ("dict", ["visual", "meta"], {"visual": torch.ones(1), "meta": 5}),
        ("tuple", ["item0", "item1"], (torch.ones(1), 5)),
        ("list", ["item0", "item1"], [torch.ones(1), 5]),
    ],
)
def test_spec_of_caches_written_by_the_original_implementation(structure, names, expected):
    spec = tree.spec_from_schema(structure, names, "")
    values = {"": torch.ones(1), "visual": torch.ones(1), "meta": 5, "item0": torch.ones(1), "item1": 5}
    if structure == "blob":
        values[""] = 5
    rebuilt = tree.leaf_map(spec, values)
    assert type(rebuilt) is type(expected)
    assert str(rebuilt) == str(expected)


def test_spec_with_leaves_that_do_not_match_is_rejected():
    with pytest.raises(ValueError):
        tree.spec_from_schema("dict", ["a"], '{"t":"leaf","name":"b"}')
