"""Tests for the batched augmentation: exact results on known inputs, PIL and colorsys as references."""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pnn_ssl.config import NAMED_AUGMENTATIONS, AugmentConfig
from pnn_ssl.data.augment import (
    COLOR_JITTER_OPS,
    AugmentParams,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    affine,
    apply_params,
    augment,
    rgb_to_grayscale,
    sample_params,
    solarize,
)

INTERPOLATIONS = ("nearest", "bilinear")


def _random_images(batch: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, height, width, generator=generator)


def _digit_like() -> torch.Tensor:
    """Return a (1, 1, 28, 28) image with an asymmetric stroke, so no rotation maps it onto itself."""
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 6:22, 9:12] = 1.0  # vertical bar
    image[0, 0, 19:22, 9:20] = 0.8  # foot to the right
    image[0, 0, 6:9, 12:17] = 0.5  # flag at the top
    return image


def _geometry(images, angle=None, shift=None, scale=None, flip=None, **options):
    """Call `affine` with the same scalar parameters for every sample."""
    batch = images.shape[0]

    def repeat(value, dtype=torch.float32):
        return None if value is None else torch.tensor([value] * batch, dtype=dtype)

    return affine(images, repeat(angle), repeat(shift), repeat(scale), repeat(flip, torch.bool), **options)


def _shifted(images: torch.Tensor, tx: int, ty: int) -> torch.Tensor:
    """Return out(y, x) = in(y + ty, x + tx) with zero fill, by padding and slicing."""
    pad = max(abs(tx), abs(ty))
    height, width = images.shape[-2:]
    padded = F.pad(images, (pad, pad, pad, pad))
    return padded[..., pad + ty : pad + ty + height, pad + tx : pad + tx + width]


def _params_for(batch: int, **values) -> AugmentParams:
    """Build AugmentParams with the same value for every sample of each given op."""
    tensors = {}
    for name, value in values.items():
        dtype = torch.bool if isinstance(value, bool) else torch.float32
        tensors[name] = torch.tensor([value] * batch, dtype=dtype)
    return AugmentParams(**tensors)


# ---------------------------------------------------------------------------------------------
# Geometry.


@pytest.mark.parametrize("size", [28, 32])
def test_rotation_quarter_turns_nearest(size):
    images = _random_images(2, 3, size, size)
    for angle, turns in ((90.0, 1), (-90.0, -1), (180.0, 2)):
        rotated = _geometry(images, angle=angle, interpolation="nearest")
        assert torch.equal(rotated, torch.rot90(images, turns, dims=(-2, -1))), angle


def test_rotation_quarter_turn_bilinear():
    # 32 / 2 is a power of two, so grid_sample's coordinate conversion is exact.
    images = _random_images(2, 3, 32, 32)
    expected = torch.rot90(images, 1, dims=(-2, -1))
    assert torch.equal(_geometry(images, angle=90.0, interpolation="bilinear"), expected)

    # At 28 pixels the conversion rounds by a few millionths of a pixel.
    images = _random_images(2, 3, 28, 28)
    rotated = _geometry(images, angle=90.0, interpolation="bilinear")
    expected = torch.rot90(images, 1, dims=(-2, -1))
    torch.testing.assert_close(rotated[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], rtol=0, atol=1e-5)


def test_rotation_non_square_half_turn():
    images = _random_images(2, 1, 20, 28)
    rotated = _geometry(images, angle=180.0, interpolation="nearest")
    assert torch.equal(rotated, images.flip(-1).flip(-2))


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_identity_parameters(interpolation):
    images = _random_images(2, 3, 32, 32)
    same = _geometry(images, angle=0.0, shift=[0.0, 0.0], scale=1.0, flip=False, interpolation=interpolation)
    assert torch.equal(same, images)

    images = _random_images(2, 1, 28, 28)
    same = _geometry(images, angle=0.0, shift=[0.0, 0.0], scale=1.0, flip=False, interpolation=interpolation)
    if interpolation == "nearest":
        assert torch.equal(same, images)
    else:
        torch.testing.assert_close(same, images, rtol=0, atol=1e-5)


def test_shift_moves_single_pixel():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 10, 12] = 1.0

    shifted = _geometry(image, shift=[1.0, 0.0], interpolation="nearest")  # out(y, x) = in(y, x + 1)
    assert shifted[0, 0, 10, 11] == 1.0
    assert shifted.sum() == 1.0

    shifted = _geometry(image, shift=[0.0, -1.0], interpolation="nearest")  # out(y, x) = in(y - 1, x)
    assert shifted[0, 0, 11, 12] == 1.0
    assert shifted.sum() == 1.0


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_shift_zero_fill(interpolation):
    images = _random_images(2, 3, 32, 32)
    shifted = _geometry(images, shift=[2.0, -1.0], interpolation=interpolation, padding_mode="zeros")
    assert torch.equal(shifted, _shifted(images, 2, -1))
    assert torch.all(shifted[..., -2:] == 0)
    assert torch.all(shifted[..., 0, :] == 0)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_shift_edge_replicates_border(interpolation):
    images = _random_images(2, 3, 32, 32)
    shifted = _geometry(images, shift=[2.0, -1.0], interpolation=interpolation, padding_mode="edge")
    expected = F.pad(images, (2, 2, 2, 2), mode="replicate")[..., 1:33, 4:36]
    assert torch.equal(shifted, expected)
    assert torch.equal(shifted[..., 5, -1], images[..., 4, -1])


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_hflip_equals_flip(interpolation):
    images = _random_images(2, 3, 32, 32)
    assert torch.equal(_geometry(images, flip=True, interpolation=interpolation), images.flip(-1))

    images = _random_images(2, 1, 28, 20)
    assert torch.equal(_geometry(images, flip=True, interpolation="nearest"), images.flip(-1))


def test_scale_half_shrinks_about_centre():
    images = torch.ones(1, 1, 32, 32)
    shrunk = _geometry(images, scale=0.5, interpolation="nearest")
    expected = torch.zeros(1, 1, 32, 32)
    expected[..., 8:24, 8:24] = 1.0
    assert torch.equal(shrunk, expected)


def test_geometry_order_rotate_then_shift():
    images = _random_images(1, 1, 28, 28)
    combined = _geometry(images, angle=90.0, shift=[1.0, 2.0], interpolation="nearest")
    expected = _shifted(torch.rot90(images, 1, dims=(-2, -1)), 1, 2)
    assert torch.equal(combined, expected)


def test_geometry_order_shift_then_flip():
    images = _random_images(1, 3, 32, 32)
    combined = _geometry(images, shift=[2.0, 0.0], flip=True, interpolation="nearest")
    assert torch.equal(combined, _shifted(images, 2, 0).flip(-1))


def test_affine_per_sample_parameters():
    images = _random_images(3, 1, 28, 28)
    angle = torch.tensor([0.0, 90.0, 180.0])
    rotated = affine(images, angle, None, None, None, interpolation="nearest")
    for index, turns in enumerate((0, 1, 2)):
        assert torch.equal(rotated[index], torch.rot90(images[index], turns, dims=(-2, -1)))


def test_affine_rejects_unknown_modes():
    images = _random_images(1, 1, 8, 8)
    with pytest.raises(ValueError, match="padding_mode"):
        _geometry(images, angle=10.0, padding_mode="reflect")
    with pytest.raises(ValueError, match="interpolation"):
        _geometry(images, angle=10.0, interpolation="bicubic")


# ---------------------------------------------------------------------------------------------
# Colour.


def test_brightness():
    images = _random_images(2, 3, 8, 8)
    assert torch.equal(adjust_brightness(images, torch.ones(2)), images)
    torch.testing.assert_close(adjust_brightness(images, 0.5), images * 0.5)
    assert torch.equal(adjust_brightness(images, 3.0), (images * 3.0).clamp(max=1.0))


def test_contrast_limits():
    images = _random_images(2, 3, 8, 8)
    assert torch.equal(adjust_contrast(images, torch.ones(2)), images)

    flat = adjust_contrast(images, torch.zeros(2))
    red, green, blue = images.unbind(1)
    mean = (0.2989 * red + 0.587 * green + 0.114 * blue).mean(dim=(1, 2))  # (B,)
    torch.testing.assert_close(flat, mean.view(2, 1, 1, 1).expand(2, 3, 8, 8))


def test_contrast_one_channel_uses_image_mean():
    images = _random_images(2, 1, 8, 8)
    flat = adjust_contrast(images, 0.0)
    torch.testing.assert_close(flat, images.mean(dim=(1, 2, 3), keepdim=True).expand_as(images))


def test_saturation():
    images = _random_images(2, 3, 8, 8)
    assert torch.equal(adjust_saturation(images, torch.ones(2)), images)
    gray = rgb_to_grayscale(images, num_output_channels=3)
    torch.testing.assert_close(adjust_saturation(images, torch.zeros(2)), gray)

    one_channel = _random_images(2, 1, 8, 8)
    assert torch.equal(adjust_saturation(one_channel, 0.0), one_channel)


def test_hue_zero_shift_is_identity():
    images = _random_images(2, 3, 16, 16)
    torch.testing.assert_close(adjust_hue(images, torch.zeros(2)), images, rtol=0, atol=1e-6)


def test_hue_half_turn_maps_primaries_to_complements():
    pixels = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.4, 0.4, 0.4]]
    ).T.reshape(1, 3, 1, 4)
    expected = torch.tensor(
        [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.4, 0.4, 0.4]]
    ).T.reshape(1, 3, 1, 4)
    assert torch.equal(adjust_hue(pixels, 0.5), expected)
    assert torch.equal(adjust_hue(pixels, -0.5), expected)


def test_hue_matches_colorsys():
    images = _random_images(1, 3, 4, 4)
    for shift in (-0.4, -0.1, 0.15, 0.33):
        shifted = adjust_hue(images, shift)
        for y in range(4):
            for x in range(4):
                hue, saturation, value = colorsys.rgb_to_hsv(*images[0, :, y, x].tolist())
                expected = colorsys.hsv_to_rgb((hue + shift) % 1.0, saturation, value)
                torch.testing.assert_close(shifted[0, :, y, x], torch.tensor(expected), rtol=0, atol=1e-5)


def test_hue_one_channel_unchanged():
    images = _random_images(2, 1, 8, 8)
    assert torch.equal(adjust_hue(images, 0.3), images)


def test_brightness_contrast_match_pil():
    image_module = pytest.importorskip("PIL.Image")
    enhance = pytest.importorskip("PIL.ImageEnhance")
    generator = torch.Generator().manual_seed(3)
    pixels = torch.randint(0, 256, (6, 7, 3), generator=generator, dtype=torch.uint8)
    image = image_module.fromarray(pixels.numpy())  # uint8 (H, W, 3) is read as RGB
    images = pixels.permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W)

    for factor in (0.4, 1.6):
        reference = torch.from_numpy(np.array(enhance.Brightness(image).enhance(factor)))
        ours = adjust_brightness(images, factor)[0].permute(1, 2, 0) * 255
        torch.testing.assert_close(ours, reference.float(), rtol=0, atol=1.0)

        # PIL rounds the mean of its 8-bit grayscale image, hence the wider tolerance.
        reference = torch.from_numpy(np.array(enhance.Contrast(image).enhance(factor)))
        ours = adjust_contrast(images, factor)[0].permute(1, 2, 0) * 255
        torch.testing.assert_close(ours, reference.float(), rtol=0, atol=1.5)


def test_grayscale_weights():
    pixel = torch.tensor([0.2, 0.6, 0.9]).view(1, 3, 1, 1)
    expected = 0.2989 * 0.2 + 0.587 * 0.6 + 0.114 * 0.9
    gray = rgb_to_grayscale(pixel, num_output_channels=3)
    assert gray.shape == (1, 3, 1, 1)
    torch.testing.assert_close(gray, torch.full((1, 3, 1, 1), expected), rtol=0, atol=1e-7)


def test_solarize_thresholds():
    pixels = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0]).view(1, 1, 1, 5)
    assert torch.equal(solarize(pixels, 0.0), 1.0 - pixels)
    expected = torch.tensor([0.0, 0.2, 0.5, 0.3, 0.0]).view(1, 1, 1, 5)
    torch.testing.assert_close(solarize(pixels, 0.5), expected)


def test_solarize_mask_selects_samples():
    images = _random_images(2, 3, 4, 4)
    solarized = solarize(images, 0.0, torch.tensor([True, False]))
    assert torch.equal(solarized[0], 1.0 - images[0])
    assert torch.equal(solarized[1], images[1])


def test_jitter_follows_per_sample_order():
    images = _random_images(2, 3, 8, 8)
    params = dataclasses.replace(
        _params_for(2, brightness=1.8, contrast=0.3, saturation=0.5, hue=0.2),
        jitter_order=torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]),
    )
    jittered = apply_params(images, params, AugmentConfig())

    forward = adjust_hue(adjust_saturation(adjust_contrast(adjust_brightness(images, 1.8), 0.3), 0.5), 0.2)
    backward = adjust_brightness(adjust_contrast(adjust_saturation(adjust_hue(images, 0.2), 0.5), 0.3), 1.8)
    torch.testing.assert_close(jittered[0], forward[0])
    torch.testing.assert_close(jittered[1], backward[1])
    assert not torch.allclose(forward, backward)


def test_jitter_without_order_uses_fixed_order():
    images = _random_images(2, 3, 8, 8)
    params = _params_for(2, brightness=1.8, contrast=0.3, saturation=0.5, hue=0.2)
    jittered = apply_params(images, params, AugmentConfig())
    forward = adjust_hue(adjust_saturation(adjust_contrast(adjust_brightness(images, 1.8), 0.3), 0.5), 0.2)
    torch.testing.assert_close(jittered, forward)


# ---------------------------------------------------------------------------------------------
# Random parameters and whole pipelines.


def test_samples_get_distinct_parameters():
    images = _digit_like().expand(64, -1, -1, -1)
    generator = torch.Generator().manual_seed(0)
    augmented = augment(images, NAMED_AUGMENTATIONS["mnist-ssl"], generator)
    assert torch.unique(augmented.flatten(1), dim=0).shape[0] == 64


def test_same_seed_same_output():
    images = _random_images(16, 3, 32, 32)
    config = NAMED_AUGMENTATIONS["cifar10-ssl"]
    first = augment(images, config, torch.Generator().manual_seed(7))
    second = augment(images, config, torch.Generator().manual_seed(7))
    third = augment(images, config, torch.Generator().manual_seed(8))
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


@pytest.mark.parametrize("name", sorted(NAMED_AUGMENTATIONS))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_named_pipelines_keep_shape_and_range(name, channels, interpolation):
    config = dataclasses.replace(NAMED_AUGMENTATIONS[name], interpolation=interpolation)
    images = _random_images(32, channels, 28, 28)
    augmented = augment(images, config, torch.Generator().manual_seed(1))
    assert augmented.shape == images.shape
    assert augmented.dtype == images.dtype
    assert augmented.min() >= 0.0
    assert augmented.max() <= 1.0


def test_sample_params_ranges():
    config = dataclasses.replace(NAMED_AUGMENTATIONS["cifar10-ssl"], rotation_deg=15.0)
    params = sample_params(4000, config, torch.Generator().manual_seed(0))

    assert params.angle_deg.abs().max() <= 15.0
    assert set(params.translate_px.unique().tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    assert params.scale.min() >= 1.0
    assert params.scale.max() <= 1.3
    assert params.brightness.min() >= 0.6
    assert params.brightness.max() <= 1.4
    assert params.saturation.min() >= 0.8
    assert params.saturation.max() <= 1.2
    assert params.hue.abs().max() <= 0.5
    assert abs(params.hflip.float().mean().item() - 0.5) < 0.05
    assert abs(params.grayscale.float().mean().item() - 0.2) < 0.05
    assert abs(params.solarize.float().mean().item() - 0.1) < 0.05
    assert torch.equal(params.jitter_order.sort(dim=1).values, torch.arange(4).expand(4000, 4))


def test_disabled_ops_draw_nothing():
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    params = sample_params(8, AugmentConfig(), generator)
    assert all(getattr(params, item.name) is None for item in dataclasses.fields(params))
    assert torch.equal(generator.get_state(), state)

    images = _random_images(8, 3, 8, 8)
    assert torch.equal(augment(images, AugmentConfig(), generator), images)


def test_contrast_only_skips_resampling():
    config = AugmentConfig(contrast=0.5)
    params = sample_params(4, config, torch.Generator().manual_seed(0))
    assert params.jitter_order is None
    images = _random_images(4, 1, 28, 28)
    assert torch.equal(apply_params(images, params, config), adjust_contrast(images, params.contrast))


def test_grayscale_probability_one():
    config = AugmentConfig(grayscale_p=1.0)
    images = _random_images(4, 3, 8, 8)
    augmented = augment(images, config, torch.Generator().manual_seed(0))
    assert torch.equal(augmented, rgb_to_grayscale(images, num_output_channels=3))


def test_empty_batch_passes_through():
    images = torch.rand(0, 3, 32, 32)
    augmented = augment(images, NAMED_AUGMENTATIONS["cifar10-ssl"], torch.Generator().manual_seed(0))
    assert augmented.shape == (0, 3, 32, 32)


def test_apply_params_is_deterministic():
    config = NAMED_AUGMENTATIONS["cifar10-ssl"]
    params = sample_params(8, config, torch.Generator().manual_seed(0))
    images = _random_images(8, 3, 32, 32)
    assert torch.equal(apply_params(images, params, config), apply_params(images, params, config))


def test_apply_params_rejects_bad_input():
    config = NAMED_AUGMENTATIONS["mnist-ssl"]
    params = sample_params(4, config, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="shape"):
        apply_params(torch.rand(4, 2, 8, 8), params, config)
    with pytest.raises(ValueError, match="dtype"):
        apply_params(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), params, config)
    with pytest.raises(ValueError, match="batch size"):
        apply_params(torch.rand(5, 1, 8, 8), params, config)


def test_jitter_op_names_match_params():
    names = {item.name for item in dataclasses.fields(AugmentParams)}
    assert set(COLOR_JITTER_OPS) <= names


def test_params_move_between_devices():
    params = sample_params(4, NAMED_AUGMENTATIONS["cifar10-ssl"], torch.Generator().manual_seed(0))
    moved = params.to("cpu")
    assert torch.equal(moved.scale, params.scale)
    assert moved.angle_deg is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    config = dataclasses.replace(NAMED_AUGMENTATIONS["cifar10-ssl"], interpolation="bilinear")
    images = _random_images(64, 3, 32, 32)
    params = sample_params(64, config, torch.Generator().manual_seed(0))
    on_cpu = apply_params(images, params, config)
    on_cuda = apply_params(images.cuda(), params.to("cuda"), config)
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=0, atol=1e-4)

    generator = torch.Generator(device="cuda")
    first = augment(images.cuda(), config, generator.manual_seed(3))
    second = augment(images.cuda(), config, generator.manual_seed(3))
    assert first.device.type == "cuda"
    assert torch.equal(first, second)
