"""The official checkpoint layout at full 7B shapes maps onto our model, on the meta device (no weights)."""

import pytest

from nextgpt import checkpoint as ckpt
from nextgpt.config import get_preset
from nextgpt.model import NextGPT
from official_layout import official_layout


@pytest.fixture(scope="module")
def meta_7b():
    return NextGPT.from_config(get_preset("nextgpt-7b-tiva-v0"), meta=True)


def test_every_official_key_maps_with_the_right_shape(meta_7b):
    expected = meta_7b.trained_shapes()
    layout = official_layout()
    mapped = {ckpt.official_to_ours(k): shape for k, shape in layout.items()}
    assert None not in mapped
    assert set(mapped) == set(expected), (set(mapped) ^ set(expected))
    for k, shape in mapped.items():
        assert tuple(expected[k]) == shape, k
    # 396.05 M parameters = 792.09 MB at fp16, the size of the released file
    total = sum(int(__import__("math").prod(s)) for s in layout.values())
    assert total == 396_045_824 or abs(total - 396.05e6) < 0.01e6


def test_keys_without_adapter_name_map_too():
    layout = official_layout(layers=1, adapter_name=False)
    for k in layout:
        if ".lora_" in k:
            assert ckpt.official_to_ours(k).endswith(".default.weight")


def test_round_trip_names(meta_7b):
    for k in meta_7b.trained_shapes():
        assert ckpt.official_to_ours(ckpt.ours_to_official(k)) == k
