"""Self-describing artifact and tensor storage: exact round trips, honest sizes, reload without the class."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from aup.compression.torch import zoo
from aup.compression.torch.artifact.files import load_compressed, read_artifact, save_artifact, save_masks
from aup.compression.torch.artifact.storage import decode_tensor, encode_tensor, encoded_nbytes, pack_bits, unpack_bits


# ----------------------------------------------------------------------------- storage


@pytest.mark.parametrize("bits", range(1, 17))
def test_pack_bits_round_trip(bits):
    q = torch.randint(0, 2 ** bits, (1001,), generator=torch.Generator().manual_seed(bits))
    packed = pack_bits(q, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == (1001 * bits + 7) // 8
    assert torch.equal(unpack_bits(packed, bits, 1001), q)


def _on_grid(shape, bits, scale, zero_point, seed=0):
    q = torch.randint(0, 2 ** bits, shape, generator=torch.Generator().manual_seed(seed))
    scale_t = torch.as_tensor(scale, dtype=torch.float64)
    zp_t = torch.as_tensor(zero_point, dtype=torch.float64)
    if scale_t.dim():
        scale_t = scale_t.view(-1, *([1] * (len(shape) - 1)))
    if zp_t.dim():
        zp_t = zp_t.view(-1, *([1] * (len(shape) - 1)))
    return ((q.double() - zp_t) * scale_t).float()


def test_quantized_tensors_round_trip_exactly_and_pack_densely():
    t4 = _on_grid((64, 32, 3, 3), 4, 0.05, 7.0)
    d4 = encode_tensor(t4, bits=4, scale=0.05, zero_point=7.0)
    assert torch.equal(decode_tensor(d4), t4)
    t8 = _on_grid((64, 32, 3, 3), 8, 0.05, 128.0)
    d8 = encode_tensor(t8, bits=8, scale=0.05, zero_point=128.0)
    assert torch.equal(decode_tensor(d8), t8)
    assert encoded_nbytes(d4) * 2 == encoded_nbytes(d8) == t8.numel()
    # fractional zero point (DoReFa / BNN grids) and per-channel parameters
    tb = _on_grid((16, 8), 1, 0.5, 0.5)
    assert torch.equal(decode_tensor(encode_tensor(tb, bits=1, scale=0.5, zero_point=0.5)), tb)
    scale = torch.rand(64) + 0.01
    zp = torch.randint(0, 32, (64,)).double()
    tc = _on_grid((64, 32, 3, 3), 5, scale, zp)
    dc = encode_tensor(tc, bits=5, scale=scale, zero_point=zp)
    assert dc["per_channel"] and torch.equal(decode_tensor(dc), tc)


def test_group_wise_grid_of_a_transposed_weight_round_trips():
    """RTN/GPTQ on GPT-2's Conv1D: the weight is stored [in, out] while the grid is [out, n_groups] of
    consecutive inputs (``group_axis=0``); the codes decode to the same tensor, bit for bit."""
    g = torch.Generator().manual_seed(0)
    scale = torch.rand(6, 4, generator=g).double() + 0.01  # 6 outputs, 4 groups of 8 inputs
    zero = torch.randint(0, 16, (6, 4), generator=g).double()
    codes = torch.randint(0, 16, (6, 32), generator=g).double()
    out_in = ((codes - zero.repeat_interleave(8, 1)) * scale.repeat_interleave(8, 1)).float()
    stored = out_in.t().contiguous()  # [in, out]
    encoded = encode_tensor(stored, bits=4, scale=scale, zero_point=zero, group_axis=0)
    assert encoded["group_axis"] == 0 and encoded["group_size"] == 8
    assert torch.equal(decode_tensor(encoded), stored)
    assert "group_axis" not in encode_tensor(out_in, bits=4, scale=scale, zero_point=zero)
    with pytest.raises(ValueError, match="does not fit"):
        encode_tensor(out_in, bits=4, scale=scale, zero_point=zero, group_axis=0)
    with pytest.raises(ValueError, match="group_axis"):
        decode_tensor({**encoded, "group_axis": 2})


def test_sparse_storage_when_smaller_and_exact():
    t = torch.randn(128, 64)
    assert encode_tensor(t)["enc"] == "dense"
    sparse = t * (torch.rand_like(t) > 0.8)
    d = encode_tensor(sparse)
    assert d["enc"] == "sparse" and encoded_nbytes(d) < 0.3 * sparse.numel() * 4
    assert torch.equal(decode_tensor(d), sparse)
    tq = _on_grid((128, 64), 8, 0.1, 100.0) * (torch.rand(128, 64) > 0.7)
    dq = encode_tensor(tq, bits=8, scale=0.1, zero_point=100.0)
    assert dq["enc"] == "sparse_quant" and torch.equal(decode_tensor(dq), tq)
    ints = torch.arange(10)
    assert torch.equal(decode_tensor(encode_tensor(ints)), ints)


# ----------------------------------------------------------------------------- artifact


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.fc(x)
        return -self.fc(x)


def test_artifact_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = zoo.resnet_small().eval()
    x = torch.randn(2, 3, 32, 32)
    info = save_artifact(tmp_path / "m.aup", model, example_input=x, meta={"compressor": "none"})
    assert info["kind"] == "fx" and info["max_abs_diff"] == 0.0
    loaded = load_compressed(tmp_path / "m.aup")
    assert not loaded.training and loaded.aup_meta["compressor"] == "none"
    assert torch.equal(loaded(x), model(x))
    assert set(loaded.state_dict()) == set(model.state_dict())  # user's names kept
    assert read_artifact(tmp_path / "m.aup")["example_input"] == {"shape": [2, 3, 32, 32], "dtype": "float32"}


def _quant_specs(model: nn.Module, bits: int) -> tuple[dict, dict]:
    """Per-tensor affine specs for every conv/linear weight, and the weights snapped onto the grid."""
    quant, values = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            w = module.weight.detach()
            lo, hi = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
            scale = (hi - lo) / (2 ** bits - 1)
            zp = float(round(-lo / scale))
            q = torch.round(w.double() / scale + zp).clamp(0, 2 ** bits - 1)
            quant[f"{name}.weight"] = {"bits": bits, "scale": scale, "zero_point": zp}
            values[f"{name}.weight"] = ((q - zp) * scale).float()
    return quant, values


def test_4bit_artifact_is_about_half_of_8bit_and_reloads_the_grid_values(tmp_path):
    torch.manual_seed(0)
    model = zoo.resnet_small().eval()
    x = torch.randn(1, 3, 32, 32)
    sizes = {}
    for bits in (4, 8):
        quant, values = _quant_specs(model, bits)
        snapped = zoo.resnet_small().eval()
        snapped.load_state_dict({**model.state_dict(), **values})
        sizes[bits] = save_artifact(tmp_path / f"q{bits}.aup", snapped, example_input=x, quant=quant)["bytes"]
        loaded = load_compressed(tmp_path / f"q{bits}.aup")
        for key, value in values.items():
            assert torch.equal(loaded.state_dict()[key], value)
        assert torch.allclose(loaded(x), snapped(x), atol=1e-5)
    dense = save_artifact(tmp_path / "fp32.aup", model)["bytes"]
    assert 0.45 < sizes[4] / sizes[8] < 0.6, sizes
    assert sizes[8] < 0.3 * dense


def test_activation_quant_reattached_on_load(tmp_path):
    torch.manual_seed(0)
    model = zoo.DigitsCNN().eval()
    x = torch.randn(2, 1, 8, 8)
    specs = {"relu1": {"output": {"bits": 2, "scale": 0.5, "zero_point": 0.0, "mode": "affine"}}}
    save_artifact(tmp_path / "a.aup", model, example_input=x, meta={"activation_quant": specs})
    loaded = load_compressed(tmp_path / "a.aup")
    seen = []
    loaded.relu1.register_forward_hook(lambda m, i, o: seen.append(o))
    loaded(x)
    levels = torch.unique(seen[0])
    assert len(levels) <= 4 and bool(((levels / 0.5) == torch.round(levels / 0.5)).all())


def test_untraceable_model_is_stored_as_a_module_tree(tmp_path):
    torch.manual_seed(0)
    model = Branchy()
    x = torch.randn(3, 4)
    info = save_artifact(tmp_path / "b.aup", model, example_input=x)
    assert info["kind"] == "tree"
    doc = read_artifact(tmp_path / "b.aup")
    assert doc["meta"]["needs_class"] and "torch.fx could not trace" in doc["fx_error"]
    assert torch.equal(load_compressed(tmp_path / "b.aup")(x), model(x))


def test_masks_are_applied_to_stored_tensors_and_mask_file(tmp_path):
    model = zoo.DigitsCNN().eval()
    mask = (torch.rand_like(model.fc1.weight) > 0.5).float()
    save_artifact(tmp_path / "m.aup", model, masks={"fc1": {"weight": mask, "bias": None}})
    loaded = load_compressed(tmp_path / "m.aup")
    assert torch.equal(loaded.fc1.weight, model.fc1.weight * mask)
    save_masks(tmp_path / "mask.pth", {"fc1": {"weight": mask, "bias": None}})
    saved = torch.load(tmp_path / "mask.pth")
    assert set(saved) == {"fc1"} and torch.equal(saved["fc1"]["weight"], mask) and saved["fc1"]["bias"] is None


def test_not_an_artifact_is_a_clear_error(tmp_path):
    torch.save({"a": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not an aup compressed-model artifact"):
        load_compressed(tmp_path / "x.pt")


@pytest.mark.slow
def test_reload_without_the_users_class(tmp_path):
    (tmp_path / "usermodel.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 4, 3)
                self.fc = nn.Linear(4, 2)
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
    """))
    save = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(tmp_path)!r})
        import usermodel
        from aup.compression.torch.artifact.files import save_artifact
        torch.manual_seed(0)
        m = usermodel.Net().eval()
        x = torch.randn(2, 1, 6, 6)
        save_artifact({str(tmp_path / 'n.aup')!r}, m, example_input=x)
        torch.save((x, m(x).detach()), {str(tmp_path / 'io.pt')!r})
    """)
    load = textwrap.dedent(f"""
        import sys, torch
        from aup.compression import load_compressed
        m = load_compressed({str(tmp_path / 'n.aup')!r})
        x, y = torch.load({str(tmp_path / 'io.pt')!r})
        assert "usermodel" not in sys.modules
        assert torch.equal(m(x), y)
        print("ok")
    """)
    subprocess.run([sys.executable, "-c", save], check=True, cwd=tmp_path)
    out = subprocess.run([sys.executable, "-c", load], check=True, capture_output=True, text=True, cwd="/")
    assert out.stdout.strip() == "ok"
