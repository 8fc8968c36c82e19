"""CacheModuleDecorator: only misses are computed, hits are exact, the wrapper stays transparent."""

from __future__ import annotations

import pytest
import torch
from conftest import FrozenLinear, Recorder, bits_equal, inputs_for, random_tensor
from torch import nn

from torchcachex import CacheModuleDecorator


def _outputs_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and bits_equal(a, b)
    if isinstance(a, dict):
        return type(b) is dict and list(a) == list(b) and all(_outputs_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_outputs_equal, a, b))
    return a == b


OUTPUTS = {
    "tensor": lambda x: x * 2,
    "dict": lambda x: {"visual": x * 2, "semantic": x.sum(1).half()},
    "tuple": lambda x: (x * 2, x.argmax(1)),
    "list": lambda x: [x * 2, x[:, :2]],
    "nested": lambda x: {"a": (x * 2, {"b": x.bool()}), "c": [x.double()]},
    "mixed": lambda x: {"features": x * 2, "metadata": {"width": x.shape[-1], "tags": ["a", None, 1.5]}},
}


@pytest.mark.parametrize("kind", list(OUTPUTS))
def test_cached_outputs_equal_the_module_outputs(make_backend, kind):
    module = Recorder(OUTPUTS[kind])
    cached = CacheModuleDecorator(module, make_backend(kind))
    x = inputs_for([0, 1, 2, 3])
    expected = OUTPUTS[kind](x)

    first = cached(x, cache_ids=["s0", "s1", "s2", "s3"])
    second = cached(x, cache_ids=["s0", "s1", "s2", "s3"])
    assert module.calls == 1  # the second call was served from the cache
    assert _outputs_equal(first, expected)
    assert _outputs_equal(second, expected)

    reordered = cached(x[[3, 1]], cache_ids=["s3", "s1"])
    assert module.calls == 1
    assert _outputs_equal(reordered, OUTPUTS[kind](x[[3, 1]]))


def test_only_the_misses_are_computed(make_backend):
    module = FrozenLinear()
    cached = CacheModuleDecorator(module, make_backend())
    cached(inputs_for([0, 1, 2]), cache_ids=[0, 1, 2])
    module.seen.clear()

    ids = [5, 1, 6, 0, 2]
    out = cached(inputs_for(ids), cache_ids=ids)
    assert module.seen == [5, 6]
    assert torch.equal(out, module.reference(inputs_for(ids)))


@pytest.mark.parametrize(
    "dtype",
    [torch.uint16, torch.uint64, torch.float8_e5m2, torch.bfloat16, torch.bool, torch.complex64, torch.float32],
    ids=str,
)
def test_partial_hits_with_duplicates_are_bit_exact_for_every_dtype(make_backend, dtype):
    table = random_tensor(dtype, 10, 3)  # the output of sample i is table[i]
    module = Recorder(lambda x: table[x[:, 0].long()])
    cached = CacheModuleDecorator(module, make_backend())
    cached(inputs_for([0, 1, 2]), cache_ids=[0, 1, 2])
    ids = [2, 7, 0, 7, 9]
    out = cached(inputs_for(ids), cache_ids=ids)
    assert module.seen[3:] == [7, 9]
    assert bits_equal(out, table[ids])


def test_partial_hits_are_exact_when_the_output_is_a_view_at_an_odd_byte_offset(make_backend):
    # Rows of 8 bytes whose storage starts 1 byte in: the merge cannot move
    # them as 8-byte words and must still place every byte.
    storage = torch.arange(1 + 10 * 8, dtype=torch.uint8)
    table = storage[1:].view(10, 8)

    def consecutive_rows(x: torch.Tensor) -> torch.Tensor:  # a view of `table`, no copy
        first = int(x[0, 0])
        return table[first:first + len(x)]

    module = Recorder(consecutive_rows)
    cached = CacheModuleDecorator(module, make_backend())
    cached(inputs_for([0, 1]), cache_ids=[0, 1])
    ids = [0, 1, 2, 3]  # two hits, then misses 2 and 3 computed as one view at byte offset 17
    out = cached(inputs_for(ids), cache_ids=ids)
    assert module.seen[2:] == [2, 3]
    assert torch.equal(out, table[ids])


def test_full_hits_never_call_the_module(make_backend):
    module = FrozenLinear()
    cached = CacheModuleDecorator(module, make_backend())
    for _ in range(3):
        cached(inputs_for(list(range(8))), cache_ids=torch.arange(8))
    assert module.calls == 1


def test_duplicate_ids_are_computed_once_and_served_to_every_position(make_backend):
    module = FrozenLinear()
    cached = CacheModuleDecorator(module, make_backend())
    ids = [3, 3, 4, 3]
    out = cached(inputs_for(ids), cache_ids=ids)
    assert module.seen == [3, 4]
    assert torch.equal(out, module.reference(inputs_for(ids)))

    module.seen.clear()
    ids = [4, 9, 9, 3, 9]  # hits and a duplicated miss
    out = cached(inputs_for(ids), cache_ids=torch.tensor(ids))
    assert module.seen == [9]
    assert torch.equal(out, module.reference(inputs_for(ids)))


def test_a_first_batch_of_integer_ids_with_one_repeated_computes_it_once(make_backend):
    # Nothing cached: the engine alone decides whether the ids are distinct, so that the
    # module may run on the batch as called.
    module = FrozenLinear()
    cached = CacheModuleDecorator(module, make_backend())
    ids = torch.randperm(300, generator=torch.Generator().manual_seed(0)) - 150  # 0 and negatives too
    ids[200] = ids[17]
    out = cached(inputs_for(ids.tolist()), cache_ids=ids)
    assert sorted(module.seen) == sorted(set(ids.tolist()))
    assert torch.equal(out, module.reference(inputs_for(ids.tolist())))


def test_a_batch_with_nothing_cached_reaches_the_module_as_called(make_backend):
    received = []

    class Spy(nn.Module):
        def forward(self, x, scale, mask=None):
            received.append((x, scale, mask))
            return x * scale

    cached = CacheModuleDecorator(Spy(), make_backend())
    x, mask = inputs_for([0, 1, 2]), torch.ones(3, dtype=torch.bool)
    out = cached(x, 2.0, mask=mask, cache_ids=torch.tensor([0, 1, 2]))
    assert received[0][0] is x and received[0][1] == 2.0 and received[0][2] is mask  # not sliced or copied
    assert torch.equal(out, x * 2)
    assert torch.equal(cached(x, 2.0, mask=mask, cache_ids=[0, 1, 2]), x * 2)
    assert len(received) == 1

    # Repeated ids with nothing cached: each computed once, from its first occurrence, after one
    # lookup of the batch (4 misses counted, not 8).
    misses = cached.cache_backend.stats()["misses"]
    ids = torch.tensor([7, 8, 7, 7])
    out = cached(inputs_for([7, 8, 7, 7]), 3.0, cache_ids=ids)
    assert cached.cache_backend.stats()["misses"] - misses == 4
    assert [int(v) for v in received[1][0][:, 0]] == [7, 8]
    assert torch.equal(out, inputs_for([7, 8, 7, 7]) * 3)


def test_the_module_runs_without_grad_and_grad_mode_is_restored_even_when_it_fails(make_backend):
    modes = []

    class Probe(nn.Module):
        def forward(self, x):
            modes.append(torch.is_grad_enabled())
            if x[0, 0] < 0:
                raise RuntimeError("module failed")
            return x * 2

    cached = CacheModuleDecorator(Probe(), make_backend())
    assert not cached(inputs_for([0, 1]), cache_ids=[0, 1]).requires_grad  # a first-epoch call
    assert not cached(inputs_for([1, 2]), cache_ids=[1, 2]).requires_grad  # a partial hit
    with pytest.raises(RuntimeError, match="module failed"):
        cached(inputs_for([-1]), cache_ids=[5])
    assert modes == [False, False, False]
    assert torch.is_grad_enabled()
    with torch.no_grad():
        cached(inputs_for([3]), cache_ids=[3])
        assert not torch.is_grad_enabled()  # the caller's mode, not forced back on


def test_ids_from_a_dict_batch_and_from_key_from_batch_fn(make_backend):
    class DictModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, batch):
            self.seen.append((batch["x"][:, 0].tolist(), list(batch["names"]), batch["cache_ids"]))
            return batch["x"] * 10

    module = DictModel()
    cached = CacheModuleDecorator(module, make_backend("dict_batch"))
    batch = {"x": inputs_for([0, 1]), "names": ["zero", "one"], "cache_ids": ["id0", "id1"]}
    cached(batch)
    batch = {"x": inputs_for([0, 2]), "names": ["zero", "two"], "cache_ids": ["id0", "id2"]}
    out = cached(batch)
    # The miss-only call got the sliced tensor, the sliced per-sample list and the sliced ids.
    assert module.seen[-1] == ([2.0], ["two"], ["id2"])
    assert torch.equal(out, inputs_for([0, 2]) * 10)

    by_fn = FrozenLinear()
    keyed = CacheModuleDecorator(by_fn, make_backend("by_fn"),
                                 key_from_batch_fn=lambda x: x[:, 0].long())
    keyed(inputs_for([1, 2]))
    keyed(inputs_for([2, 3]))
    assert by_fn.seen == [1, 2, 3]


def test_other_arguments_are_passed_through_and_sliced_when_batched(make_backend):
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = []

        def forward(self, x, mask, *, scale, bias):
            self.calls.append((x.shape[0], mask.shape[0], scale, bias.shape))
            return x * scale + mask + bias

    module = TwoInputs()
    cached = CacheModuleDecorator(module, make_backend())
    bias = torch.ones(4)  # not batched (dim 0 != 3): passed as is
    x, mask = inputs_for([0, 1, 2]), torch.ones(3, 4)
    cached(x[:1], mask[:1], scale=2.0, bias=bias, cache_ids=[0])
    out = cached(x, mask, scale=2.0, bias=bias, cache_ids=[0, 1, 2])
    assert module.calls[-1] == (2, 2, 2.0, (4,))
    assert torch.equal(out, x * 2.0 + mask + bias)


def test_varying_sequence_lengths_across_batches(make_backend):
    module = Recorder(lambda x: x[:, None, :].expand(-1, int(x[0, 0]) % 5 + 2, -1).clone())
    cached = CacheModuleDecorator(module, make_backend())
    cached(inputs_for([0, 5]), cache_ids=[0, 5])  # length 2
    cached(inputs_for([1, 6]), cache_ids=[1, 6])  # length 3
    out = cached(inputs_for([0, 1, 5]), cache_ids=[0, 1, 5])
    assert isinstance(out, list) and [t.shape[0] for t in out] == [2, 3, 2]
    out = cached(inputs_for([3, 0, 1]), cache_ids=[3, 0, 1])  # a miss of length 5 among them
    assert [t.shape[0] for t in out] == [5, 2, 3]
    assert torch.equal(out[0], inputs_for([3])[0].expand(5, -1))


def test_non_tensor_outputs_of_mixed_batches(make_backend):
    module = Recorder(lambda x: {"f": x, "meta": {"first": int(x[0, 0])}})
    cached = CacheModuleDecorator(module, make_backend())
    cached(inputs_for([0, 1]), cache_ids=[0, 1])
    assert cached(inputs_for([0, 1]), cache_ids=[0, 1])["meta"] == {"first": 0}
    out = cached(inputs_for([0, 7]), cache_ids=[0, 7])
    assert out["meta"] == [{"first": 0}, {"first": 7}]


def test_outputs_used_by_a_trainable_head_backpropagate(make_backend):
    head = nn.Linear(3, 1)
    cached = CacheModuleDecorator(FrozenLinear(), make_backend())
    for ids in ([0, 1], [0, 1], [1, 2]):  # miss, hit, partial
        features = cached(inputs_for(ids), cache_ids=ids)
        assert not features.requires_grad
        head.zero_grad()
        head(features).sum().backward()
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_failed_store_leaves_earlier_samples_intact(make_backend):
    module = Recorder(lambda x: {"f": x, "meta": {"size": (1, 2)} if x[0, 0] > 5 else {"size": [1, 2]}})
    backend = make_backend(allow_pickle=False)
    cached = CacheModuleDecorator(module, backend)
    cached(inputs_for([0, 1]), cache_ids=[0, 1])
    with pytest.raises(TypeError, match="allow_pickle"):
        cached(inputs_for([9, 0]), cache_ids=[9, 0])
    assert 9 not in backend and len(backend) == 2
    out = cached(inputs_for([0, 1]), cache_ids=[0, 1])
    assert out["meta"] == {"size": [1, 2]} and torch.equal(out["f"], inputs_for([0, 1]))


def test_disabled_decorator_calls_the_module_directly(make_backend):
    module = FrozenLinear()
    backend = make_backend()
    cached = CacheModuleDecorator(module, backend, enabled=False)
    for _ in range(2):
        out = cached(inputs_for([0, 1]), cache_ids=[0, 1])
    assert module.calls == 2 and len(backend) == 0
    assert torch.equal(out, module.reference(inputs_for([0, 1])))


# --------------------------------------------------------------- stateless guard


def test_trainable_modules_are_refused(make_backend):
    with pytest.raises(ValueError, match=r"requires_grad_\(False\)"):
        CacheModuleDecorator(nn.Linear(4, 3), make_backend())
    CacheModuleDecorator(nn.Linear(4, 3).requires_grad_(False), make_backend())
    CacheModuleDecorator(nn.Linear(4, 3), make_backend(), enforce_stateless=False)


def test_trainable_module_in_eval_mode_is_accepted_until_called_in_training_mode(make_backend):
    cached = CacheModuleDecorator(nn.Linear(4, 3).eval(), make_backend())
    cached.eval()
    cached(torch.ones(2, 4), cache_ids=[0, 1])
    cached.train()
    with pytest.raises(ValueError, match=r"requires_grad_\(False\)"):
        cached(torch.ones(2, 4), cache_ids=[0, 1])


def test_unfreezing_after_wrapping_is_caught_in_training_mode(make_backend):
    module = FrozenLinear()
    cached = CacheModuleDecorator(module, make_backend())
    module.requires_grad_(True)
    cached.eval()
    cached(inputs_for([0]), cache_ids=[0])
    cached.train()
    with pytest.raises(ValueError, match="enforce_stateless=False"):
        cached(inputs_for([0]), cache_ids=[0])


def test_unfreezing_during_training_mode_calls_is_caught_within_the_guard_window(make_backend):
    # 20 layers = 40 parameters: after the first full check, each call checks 8 of them in turn,
    # so unfreezing the last layer is caught within ceil(40 / 8) = 5 calls.
    module = nn.Sequential(*[nn.Linear(4, 4) for _ in range(20)]).requires_grad_(False)
    cached = CacheModuleDecorator(module, make_backend())
    cached(torch.ones(2, 4), cache_ids=[0, 1])
    module[-1].requires_grad_(True)
    raised_at = None
    for call in range(1, 6):
        try:
            cached(torch.ones(2, 4), cache_ids=[0, 1])
        except ValueError as exc:
            assert "'19.weight'" in str(exc) and "'19.bias'" in str(exc)
            raised_at = call
            break
    assert raised_at is not None


def test_train_and_eval_propagate(make_backend):
    cached = CacheModuleDecorator(FrozenLinear(), make_backend())
    cached.eval()
    assert not cached.module.training
    cached.train()
    assert cached.module.training


# ------------------------------------------------------------------ state dict


def test_state_dict_is_the_inner_modules(make_backend):
    inner = FrozenLinear()
    cached = CacheModuleDecorator(inner, make_backend())
    assert list(cached.state_dict()) == list(inner.state_dict()) == ["linear.weight", "linear.bias"]
    other = FrozenLinear(seed=1)
    cached.load_state_dict(other.state_dict())
    assert torch.equal(inner.linear.weight, other.linear.weight)


def test_state_dict_inside_a_bigger_model_loads_with_or_without_the_decorator(make_backend):
    class Model(nn.Module):
        def __init__(self, features: nn.Module):
            super().__init__()
            self.features = features
            self.head = nn.Linear(3, 1)

    plain = Model(FrozenLinear(seed=2))
    decorated = Model(CacheModuleDecorator(FrozenLinear(seed=3), make_backend()))
    assert list(decorated.state_dict()) == list(plain.state_dict())
    decorated.load_state_dict(plain.state_dict())
    assert torch.equal(decorated.features.module.linear.weight, plain.features.linear.weight)
    fresh = Model(FrozenLinear(seed=4))
    fresh.load_state_dict(decorated.state_dict())
    assert torch.equal(fresh.features.linear.bias, plain.features.linear.bias)


# ------------------------------------------------------------------ devices


def test_map_location_on_read_is_used_without_input_tensors(make_backend):
    class FromIds(nn.Module):
        def forward(self, ids):
            return torch.tensor([[float(i)] for i in ids])

    cached = CacheModuleDecorator(FromIds(), make_backend(), map_location_on_read="meta")
    cached([1, 2], cache_ids=[1, 2])
    out = cached([1, 2], cache_ids=[1, 2])
    assert out.device.type == "meta" and out.shape == (2, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_results_follow_the_input_device(make_backend):
    module = FrozenLinear().cuda()
    cached = CacheModuleDecorator(module, make_backend())
    x = inputs_for([0, 1, 2]).cuda()
    computed = cached(x[:2], cache_ids=[0, 1])
    hit = cached(x[:2], cache_ids=[0, 1])
    partial = cached(x, cache_ids=[0, 1, 2])
    assert computed.device == hit.device == partial.device == x.device
    torch.testing.assert_close(partial, module.reference(x), rtol=0, atol=0)
