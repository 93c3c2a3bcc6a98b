"""Experiment configuration: frozen dataclasses, YAML presets and `key=value` overrides.

Defaults carry the values stated in the paper's text (Laydevant et al., "The Benefits of
Self-Supervised Learning for Training Physical Neural Networks", appendix B) for the end-to-end
VICReg MLP on MNIST. Presets in ``pnn_ssl/presets/*.yaml`` change them: ``paper``,
``reference-code`` (what the authors' notebooks ran), the supervised baselines, and the budget
overlays ``smoke``, ``quick`` and ``full``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """An invalid preset, key or value in an experiment configuration."""


@dataclass(frozen=True)
class DataConfig:
    """Dataset name and the sources to load it from."""

    dataset: str = "mnist"  # mnist | fashion-mnist | cifar10
    data_dir: str | None = None  # folder with the standard files; tried before any other source
    download: bool = True  # fall back to the standard download URLs when no offline copy exists
    normalize: bool = False  # per-channel mean/std; the paper's MNIST inputs stay in [0, 1]
    train_limit: int = 0  # use at most the first N training images, or all for 0 (the run log states the count)
    test_limit: int = 0  # use at most the first N test images, or all for 0


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation applied independently to every image of a batch.

    Each field follows the torchvision transform of the same name; the defaults are the identity.
    """

    rotation_deg: float = 0.0  # RandomRotation: angle uniform in [-r, r] degrees, fill 0
    crop_padding: int = 0  # RandomCrop with padding p: integer shift uniform in [-p, p] per axis
    crop_padding_mode: str = "zeros"  # zeros | edge
    scale: tuple[float, float] = (1.0, 1.0)  # RandomAffine isotropic scale range
    hflip_p: float = 0.0  # RandomHorizontalFlip probability
    brightness: float = 0.0  # ColorJitter factors; hue in [0, 0.5]
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    grayscale_p: float = 0.0  # RandomGrayscale probability (3 output channels)
    solarize_p: float = 0.0  # RandomSolarize probability
    solarize_threshold: float = 0.0  # on the [0, 1] scale; 0 inverts every pixel
    interpolation: str = "nearest"  # nearest (torchvision's default) | bilinear


# The paper's MNIST SSL pipeline (appendix B.2). Hue has no effect on one-channel images.
MNIST_SSL_PAPER = AugmentConfig(
    rotation_deg=15.0, crop_padding=2, scale=(0.9, 1.1), contrast=0.5, hue=0.5
)

NAMED_AUGMENTATIONS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    # Appendix B.1: supervised MLP with augmentation.
    "mnist-supervised": AugmentConfig(rotation_deg=5.0, crop_padding=2, scale=(0.9, 1.1)),
    "mnist-ssl": MNIST_SSL_PAPER,
    # The authors' notebooks used a wider scale range than the text states.
    "mnist-ssl-reference-code": dataclasses.replace(MNIST_SSL_PAPER, scale=(0.7, 1.3)),
    # Appendix C.3: layer-wise CIFAR-10 CNN.
    "cifar10-ssl": AugmentConfig(
        crop_padding=2,
        crop_padding_mode="edge",
        hflip_p=0.5,
        scale=(1.0, 1.3),
        brightness=0.4,
        contrast=0.4,
        saturation=0.2,
        hue=0.5,
        grayscale_p=0.2,
        solarize_p=0.1,
        solarize_threshold=0.0,
    ),
}


@dataclass(frozen=True)
class ModelConfig:
    """Backbone (MLP or CNN), projector, CNN adapter and supervised head."""

    widths: tuple[int, ...] = (1000, 1000, 1000, 1000)  # hidden layers, ReLU after each
    bias: bool = True  # the paper's text is silent; the authors' MLP code is bias-free, their convolutions have biases
    projector_widths: tuple[int, ...] = (256, 256, 256)  # ReLU between layers, none after the last
    projector_bias: bool = True
    projector_batchnorm: bool = False  # BatchNorm1d before each hidden ReLU (standard VICReg; not the paper)
    head_bias: bool = True  # supervised head; the authors' code is bias-free
    architecture: str = "mlp"  # mlp (layers from widths) | cnn (layers from channels)
    # CNN blocks, appendix C.2 and C.3: conv (stride 1, same padding) -> ReLU -> BatchNorm2d -> 2x2 max-pool.
    channels: tuple[int, ...] = (64, 128)  # output channels per block; MNIST 64, 128; CIFAR-10 128, 256, 512, 1024
    kernel_size: int = 5  # odd, padded by kernel_size // 2 so that only the pooling shrinks the image
    batchnorm: str = "train"  # train: batch statistics in training | frozen: initial statistics (mean 0, var 1) always
    adapter_width: int = 0  # CNN adapter: 1x1 conv to this many channels (0: projector_widths[0])
    adapter_pool: str = "mean"  # spatial reduction after the adapter: mean (the paper) | sum (the authors' code)


@dataclass(frozen=True)
class LossConfig:
    """Training objective and its coefficients."""

    objective: str = "vicreg"  # vicreg | barlow-twins | cross-entropy (supervised)
    sim_coeff: float = 25.0  # VICReg coefficients (appendix B.2: 25 / 25 / 1)
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    bt_lambda: float = 5.1e-3  # Barlow Twins off-diagonal weight (standard); the authors used 5e-3
    bt_off_diagonal_power: int = 2  # 2 is standard; the authors' variant uses 4
    bt_std: str = "biased"  # biased (BatchNorm, eps 1e-5 inside the root) | unbiased (std + 1e-6)
    # VICReg coefficients per layer in layer-wise training. constant: sim/std/cov_coeff for every layer.
    # sigmoid: the authors' code gives layer x = 1..L the coefficient scale / (1 + exp(-slope (x - threshold)))
    # + bias, per term; each tuple below is (sim, std, cov). The defaults are their layer-wise MLP values:
    # sim 10.44, 11.90, 17.30, 30.00; std 25; cov 0.119, 0.5, 0.881, 0.982.
    coefficient_schedule: str = "constant"  # constant | sigmoid
    sigmoid_scale: tuple[float, float, float] = (40.0, 20.0, 1.0)
    sigmoid_slope: tuple[float, float, float] = (1.5, 0.0, 2.0)
    sigmoid_threshold: tuple[float, float, float] = (4.0, 3.0, 2.0)
    sigmoid_bias: tuple[float, float, float] = (10.0, 15.0, 0.0)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, budget and the speed switches of the training loop."""

    # end-to-end: one loss on the last layer, gradients through all layers. sequential: layer 1 for
    # `epochs` epochs, then layer 2, and so on, each with its own loss and projector, earlier layers
    # frozen. simultaneous: every layer's own loss on every step, layer inputs detached.
    mode: str = "end-to-end"
    # backprop: gradients by autograd. spsa: gradients estimated from forward passes only (the `spsa`
    # section); it trains one stage at a time, so it needs mode=sequential.
    optimizer_rule: str = "backprop"
    optimizer: str = "adam"  # adam (default betas) | sgd
    momentum: float = 0.0  # SGD only; the authors' SPSA SGD runs used 0.9
    epochs: int = 1000  # appendix B.2 (per layer in sequential mode); supervised: 50 without, 100 with augmentation
    batch_size: int = 256
    lr: float = 1e-4  # Adam with default betas; the step size a_0 of an SPSA run
    weight_decay: float = 0.0  # the authors' end-to-end SSL code used 1e-6
    drop_last: bool = False
    precision: str = "bf16"  # bf16 (autocast, fp32 master weights) | fp32
    compile: bool = False  # torch.compile the model; the first epoch pays the compile time
    fused_adam: bool = True
    threads: int = 0  # torch intra-op threads (0: leave torch's default)
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    checkpoint_every: int = 10  # epochs between rewrites of checkpoints/last.pt
    keep_every: int = 0  # also keep checkpoints/epoch-NNNN.pt every N epochs (0: never)
    probe_every: int = 0  # run the linear probe during training every N epochs (0: only at the end)
    collapse_std: float = 1e-4  # stop when the mean per-feature std of the embedding falls below this


@dataclass(frozen=True)
class SPSAConfig:
    """Simultaneous perturbation stochastic approximation (Spall, 1992) of a stage's gradient.

    Used when train.optimizer_rule=spsa. Step k (0-based within a stage) perturbs every trained
    parameter by +-c_k * delta with Rademacher delta, c_k = perturbation / (k + 1)^perturbation_decay,
    and scales the learning rate by ((stability + 1) / (stability + k + 1))^step_decay, so that
    a_k = train.lr at k = 0 as in Spall's a / (A + k + 1)^alpha. The defaults are the authors' SPSA
    notebooks: n = 10, c = 0.01, no decay.
    """

    perturbations: int = 10  # n: perturbation directions averaged per step, 2n loss evaluations
    perturbation: float = 0.01  # c, in the units of the parameters
    # Spall's practical values (IEEE Trans. Aerospace and Electronic Systems 34(3), 1998, as the
    # simopt SPSA solver documents them): gamma 0.101, alpha 0.602, A about 10 % of the steps.
    perturbation_decay: float = 0.0  # gamma
    step_decay: float = 0.0  # alpha
    stability: float = 0.0  # A
    # spall: (L+ - L-) / (2 c delta). reference-code: (L+ - L-) / (c delta), twice Spall's, as the
    # authors' code; the factor cancels in Adam but doubles the step of SGD.
    estimator: str = "spall"
    views: str = "per-perturbation"  # per-perturbation: a fresh pair of views per direction (the authors') | shared
    terms: str = "all"  # all: the whole objective | one-random: one weighted term per step, drawn uniformly
    evaluation: str = "batched"  # batched: one forward over the 2n stacked parameter sets | loop: 2n forwards


@dataclass(frozen=True)
class PhysicalConfig:
    """The layer type of the backbone, for MLPs trained layer-wise.

    digital: Linear -> ReLU. analog-mvm: the simulated analog matrix-vector multiplier of
    `pnn_ssl.physics.analog` (quantised conductances, programming noise, read noise). custom: the
    layers that `factory` builds. Only train.optimizer_rule=spsa trains the last two, because their
    forward pass is a black box.
    """

    layer: str = "digital"  # digital | analog-mvm | custom
    # custom: "module:function", imported and called as function(in_features, out_features, seed=...)
    # for each layer; it returns a pnn_ssl.physics.PhysicalLayer.
    factory: str = ""
    weight_range: float = 0.1  # w_max: weights map to conductances in [-w_max, w_max]; larger values are clipped
    levels: int = 64  # conductance levels across [-w_max, w_max] (0: no quantisation)
    programming_noise: float = 0.02  # Gaussian std of each programmed weight, relative to w_max
    read_noise: float = 0.01  # Gaussian std added to every output of every read, in output units


@dataclass(frozen=True)
class ProbeConfig:
    """Linear probes on the frozen backbone's representations."""

    layers: tuple[int, ...] = (-1,)  # 1-based hidden layers; -1 is the last one
    epochs: int = 20  # the authors' probe: Adam 1e-3, batch 64, 20 epochs
    batch_size: int = 64
    lr: float = 1e-3
    repeats: int = 3  # the paper reports mean ± std over 3 probes
    converged: str = "lbfgs"  # second, converged probe: lbfgs | ridge | none
    lbfgs_max_iter: int = 300
    l2: float = 1e-4  # L2 penalty of the L-BFGS probe on standardised features
    ridge_alpha: float = 1.0  # ridge penalty on standardised features


@dataclass(frozen=True)
class ExperimentConfig:
    """One training run: the sections above plus a name and a seed."""

    name: str = "vicreg-mlp"
    description: str = ""
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=lambda: MNIST_SSL_PAPER)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    spsa: SPSAConfig = field(default_factory=SPSAConfig)
    physical: PhysicalConfig = field(default_factory=PhysicalConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self) -> None:
        validate(self)


_CHOICES: dict[str, tuple[str, ...]] = {
    "data.dataset": ("mnist", "fashion-mnist", "cifar10"),
    "augment.crop_padding_mode": ("zeros", "edge"),
    "augment.interpolation": ("nearest", "bilinear"),
    "loss.objective": ("vicreg", "barlow-twins", "cross-entropy"),
    "loss.bt_std": ("biased", "unbiased"),
    "train.precision": ("bf16", "fp32"),
    "train.mode": ("end-to-end", "sequential", "simultaneous"),
    "train.optimizer_rule": ("backprop", "spsa"),
    "train.optimizer": ("adam", "sgd"),
    "spsa.estimator": ("spall", "reference-code"),
    "spsa.views": ("per-perturbation", "shared"),
    "spsa.terms": ("all", "one-random"),
    "spsa.evaluation": ("batched", "loop"),
    "physical.layer": ("digital", "analog-mvm", "custom"),
    "model.architecture": ("mlp", "cnn"),
    "model.batchnorm": ("train", "frozen"),
    "model.adapter_pool": ("mean", "sum"),
    "loss.coefficient_schedule": ("constant", "sigmoid"),
    "probe.converged": ("lbfgs", "ridge", "none"),
}

_POSITIVE = (
    "train.epochs",
    "train.batch_size",
    "train.lr",
    "train.checkpoint_every",  # last.pt must be written at some interval, or an interrupted run is lost
    "probe.epochs",
    "probe.batch_size",
    "probe.lr",
    "probe.repeats",
    "probe.lbfgs_max_iter",
    "spsa.perturbations",
    "spsa.perturbation",
    "physical.weight_range",
)

_NON_NEGATIVE = (
    "data.train_limit",
    "data.test_limit",
    "augment.rotation_deg",
    "augment.crop_padding",
    "augment.brightness",
    "augment.contrast",
    "augment.saturation",
    "train.weight_decay",
    "train.threads",
    "model.adapter_width",
    "train.keep_every",
    "train.probe_every",
    "train.collapse_std",
    "probe.l2",
    "probe.ridge_alpha",
    "loss.sim_coeff",
    "loss.std_coeff",
    "loss.cov_coeff",
    "loss.bt_lambda",
    "train.momentum",
    "spsa.perturbation_decay",
    "spsa.step_decay",
    "spsa.stability",
    "physical.levels",
    "physical.programming_noise",
    "physical.read_noise",
)

_PROBABILITIES = ("augment.hflip_p", "augment.grayscale_p", "augment.solarize_p")


def _get(config: ExperimentConfig, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def check_device_name(key: str, name: str) -> None:
    """Reject a device name other than auto, cpu, cuda or cuda:N before any work starts."""
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", name):
        raise ConfigError(f"invalid {key}={name!r}; expected auto, cpu, cuda or cuda:N")


def validate(config: ExperimentConfig) -> None:
    """Raise ConfigError naming the first value that is out of its allowed range."""
    for key, choices in _CHOICES.items():
        if _get(config, key) not in choices:
            raise ConfigError(f"invalid {key}={_get(config, key)!r}; expected one of {', '.join(choices)}")
    for key in _POSITIVE:
        if not _get(config, key) > 0:
            raise ConfigError(f"invalid {key}={_get(config, key)!r}; it must be greater than 0")
    for key in _NON_NEGATIVE:
        if not _get(config, key) >= 0:
            raise ConfigError(f"invalid {key}={_get(config, key)!r}; it must be 0 or greater")
    for key in _PROBABILITIES:
        if not 0.0 <= _get(config, key) <= 1.0:
            raise ConfigError(f"invalid {key}={_get(config, key)!r}; a probability must lie in [0, 1]")

    low, high = config.augment.scale
    if not 0 < low <= high:
        raise ConfigError(f"invalid augment.scale={list(config.augment.scale)}; expected 0 < min <= max")
    if not 0.0 <= config.augment.solarize_threshold <= 1.0:
        raise ConfigError(
            f"invalid augment.solarize_threshold={config.augment.solarize_threshold!r}; it must lie in [0, 1]"
        )
    if not 0 <= config.augment.hue <= 0.5:
        raise ConfigError(f"invalid augment.hue={config.augment.hue!r}; it must lie in [0, 0.5]")
    if not config.model.widths or min(config.model.widths) <= 0:
        raise ConfigError(f"invalid model.widths={list(config.model.widths)}; expected positive layer widths")
    if not config.model.projector_widths or min(config.model.projector_widths) <= 0:
        raise ConfigError(
            f"invalid model.projector_widths={list(config.model.projector_widths)}; expected positive widths"
        )
    check_device_name("train.device", config.train.device)
    if config.loss.bt_off_diagonal_power not in (2, 4):
        raise ConfigError(f"invalid loss.bt_off_diagonal_power={config.loss.bt_off_diagonal_power!r}; expected 2 or 4")
    _validate_layerwise(config)
    _validate_spsa(config)
    depth = model_depth(config.model)
    for layer in config.probe.layers:
        if layer == 0 or not -depth <= layer <= depth:
            raise ConfigError(
                f"invalid probe.layers entry {layer}; hidden layers are numbered 1..{depth} (or -1 for the last)"
            )


# Image side of each dataset, for the check that the CNN's max-pool layers leave at least one pixel.
_IMAGE_SIDES = {"mnist": 28, "fashion-mnist": 28, "cifar10": 32}


def model_depth(model: ModelConfig) -> int:
    """Return the number of physical layers: CNN blocks or MLP hidden layers."""
    return len(model.channels) if model.architecture == "cnn" else len(model.widths)


def uses_staged_trainer(config: ExperimentConfig) -> bool:
    """Return whether the staged trainer runs this config (every CNN, and MLPs not trained end to end)."""
    return config.model.architecture == "cnn" or config.train.mode != "end-to-end"


def _validate_layerwise(config: ExperimentConfig) -> None:
    """Check the CNN and layer-wise fields and the combinations that the staged trainer cannot run."""
    model = config.model
    if not model.channels or min(model.channels) <= 0:
        raise ConfigError(f"invalid model.channels={model.channels!r}; expected positive channel counts")
    if model.kernel_size <= 0 or model.kernel_size % 2 == 0:
        raise ConfigError(f"invalid model.kernel_size={model.kernel_size!r}; expected an odd number such as 5")
    side = _IMAGE_SIDES[config.data.dataset]
    if model.architecture == "cnn" and side >> len(model.channels) == 0:
        raise ConfigError(
            f"invalid model.channels={model.channels!r}: {len(model.channels)} 2x2 max-pool layers shrink the "
            f"{side}x{side} images of {config.data.dataset} to nothing; use at most {side.bit_length() - 1} layers"
        )
    if not uses_staged_trainer(config):
        return
    if config.loss.objective == "cross-entropy":
        raise ConfigError(
            f"invalid loss.objective='cross-entropy' with model.architecture={model.architecture!r} and "
            f"train.mode={config.train.mode!r}; CNNs and layer-wise training support only vicreg and barlow-twins"
        )
    if config.loss.coefficient_schedule == "sigmoid" and config.loss.objective != "vicreg":
        raise ConfigError(
            f"invalid loss.coefficient_schedule='sigmoid' with loss.objective={config.loss.objective!r}; "
            "the schedule sets VICReg coefficients, so use loss.objective=vicreg"
        )
    if config.train.compile:
        raise ConfigError(
            "invalid train.compile=true for a CNN or layer-wise run; torch.compile is supported only by the "
            "end-to-end MLP trainer, so set train.compile=false"
        )


def _validate_spsa(config: ExperimentConfig) -> None:
    """Check the combinations that SPSA and the physical layers cannot run."""
    train = config.train
    if config.physical.layer != "digital":
        if train.optimizer_rule != "spsa":
            raise ConfigError(
                f"invalid physical.layer={config.physical.layer!r} with train.optimizer_rule={train.optimizer_rule!r}; "
                "a physical layer has no gradient, so set train.optimizer_rule=spsa"
            )
        if config.physical.levels == 1:
            raise ConfigError("invalid physical.levels=1; use 0 (no quantisation) or at least 2 levels")
    if (config.physical.layer == "custom") != bool(config.physical.factory):
        raise ConfigError(
            f"invalid physical.factory={config.physical.factory!r} with physical.layer={config.physical.layer!r}; "
            "physical.layer=custom needs a factory such as mypackage.devices:make_layer, and only it takes one"
        )
    if train.optimizer_rule != "spsa":
        return
    if train.mode != "sequential" or config.model.architecture != "mlp":
        raise ConfigError(
            f"invalid train.optimizer_rule='spsa' with train.mode={train.mode!r} and model.architecture="
            f"{config.model.architecture!r}; SPSA trains one MLP layer at a time, so use train.mode=sequential "
            "and model.architecture=mlp"
        )
    if config.model.projector_batchnorm:
        raise ConfigError(
            "invalid model.projector_batchnorm=true with train.optimizer_rule='spsa'; the fixed random projectors "
            "of an SPSA run see all 2n perturbed batches at once, so set model.projector_batchnorm=false"
        )


# ---------------------------------------------------------------------------------------------
# Conversion between dataclasses and plain dictionaries, with strict type checks.


def to_dict(config: Any) -> dict[str, Any]:
    """Convert a config dataclass to nested dictionaries of YAML-friendly values."""
    result: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        result[item.name] = value
    return result


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check `value` against the field's annotation and convert lists to tuples and ints to floats."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"invalid type for {key}: got {value!r}, expected {_type_name(annotation)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"invalid type for {key}: got {value!r}, expected a list")
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(key, item, args[0]) for item in value)
        if len(value) != len(args):
            raise ConfigError(f"invalid value for {key}: got {value!r}, expected a list of {len(args)} items")
        return tuple(_coerce(key, item, arg) for item, arg in zip(value, args))
    if annotation is float:
        if isinstance(value, str) and value.strip().lstrip("+-.").lower() in ("nan", "inf", "infinity"):
            raise ConfigError(f"invalid value for {key}: got {value!r}, expected a finite number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"invalid type for {key}: got {value!r}, expected a number")
        if not math.isfinite(value):
            raise ConfigError(f"invalid value for {key}: got {value!r}, expected a finite number")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"invalid type for {key}: got {value!r}, expected an integer")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"invalid type for {key}: got {value!r}, expected true or false")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"invalid type for {key}: got {value!r}, expected a string")
        return value
    raise ConfigError(f"unsupported field type for {key}: {annotation!r}")


def _unknown_key_error(key: str, valid: list[str]) -> ConfigError:
    section, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, valid, n=1)
    hint = "."
    if close:
        suggestion = f"{section}.{close[0]}" if section else close[0]
        hint = f"; did you mean {suggestion!r}?"
    return ConfigError(f"unknown config key {key!r}{hint} Valid keys here: {', '.join(valid)}")


def _build(cls: type, values: dict[str, Any], base: Any, prefix: str) -> Any:
    """Return a copy of `base` (an instance of `cls`) with `values` applied, checking every key."""
    hints = typing.get_type_hints(cls)
    names = [item.name for item in dataclasses.fields(cls)]
    changes: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in hints:
            raise _unknown_key_error(key, names)
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            current = getattr(base, name)
            if isinstance(value, str) and annotation is AugmentConfig:
                if value not in NAMED_AUGMENTATIONS:
                    raise ConfigError(
                        f"unknown augmentation pipeline {value!r}; expected one of {', '.join(NAMED_AUGMENTATIONS)}"
                    )
                changes[name] = NAMED_AUGMENTATIONS[value]
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"invalid type for {key}: got {value!r}, expected a mapping of its fields")
            changes[name] = _build(annotation, value, current, f"{key}.")
        else:
            changes[name] = _coerce(key, value, annotation)
    return dataclasses.replace(base, **changes)


def from_dict(values: dict[str, Any], base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Build a config from nested dictionaries, rejecting unknown keys and wrong types by name."""
    return _build(ExperimentConfig, values, base or ExperimentConfig(), "")


# ---------------------------------------------------------------------------------------------
# Presets and overrides.


def preset_names() -> list[str]:
    """Return the names of the presets shipped with the package."""
    folder = resources.files("pnn_ssl") / "presets"
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def read_preset(name: str) -> dict[str, Any]:
    """Read one preset file as a dictionary, following its `base:` chain."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"preset file {name!r} not found; give an existing YAML file or a preset name")
        text = path.read_text()
    else:
        entry = resources.files("pnn_ssl") / "presets" / f"{name}.yaml"
        if not entry.is_file():
            raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(preset_names())}")
        text = entry.read_text()
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid YAML in preset {name!r}: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"preset {name!r} must be a YAML mapping, got {type(values).__name__}")
    base = values.pop("base", None)
    if base is None:
        return values
    try:
        inherited = read_preset(base)
    except ConfigError as error:
        raise ConfigError(f"invalid base: {base!r} in preset {name!r}: {error}") from error
    return merge(inherited, values)


def merge(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    merged = dict(low)
    for key, value in high.items():
        if key == "augment" and isinstance(merged.get(key), str) and isinstance(value, dict):
            # Field overrides on top of a named pipeline start from that pipeline's values.
            if merged[key] not in NAMED_AUGMENTATIONS:
                raise ConfigError(
                    f"unknown augmentation pipeline {merged[key]!r}; expected one of {', '.join(NAMED_AUGMENTATIONS)}"
                )
            merged[key] = to_dict(NAMED_AUGMENTATIONS[merged[key]])
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_EXPONENT_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def parse_override(text: str) -> dict[str, Any]:
    """Turn `section.key=value` into a nested dictionary; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"invalid override {text!r}; expected key=value, for example train.epochs=10")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"invalid override {text!r}; the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid value in override {text!r}: {error}") from error
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 5e-4 (no dot) as a string
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


# Fields that change how a run executes but not what it computes, so a resumed or re-probed run may set them.
RUNTIME_FIELDS = ("train.threads", "train.device")


def resolve(presets: list[str], overrides: list[str] | None = None) -> ExperimentConfig:
    """Apply presets in order, then `key=value` overrides, onto the defaults."""
    values: dict[str, Any] = {}
    descriptions: list[str] = []
    run_name = ""
    experiments = [name for name in presets if "name" in read_preset(name)]
    if len(experiments) > 1:
        raise ConfigError(
            f"presets {experiments} each define an experiment; give one experiment preset followed by budget "
            "overlays, or write a YAML file with base: NAME that changes what you need"
        )
    if experiments and presets[0] != experiments[0]:
        raise ConfigError(
            f"budget overlay {presets[0]!r} comes before the experiment preset {experiments[0]!r}; "
            f"put the experiment first: --preset {experiments[0]} --preset {presets[0]}"
        )
    if presets and not experiments:
        presets = ["paper", *presets]  # a budget overlay alone applies to the paper's experiment
    for name in presets:
        preset = read_preset(name)
        descriptions.append(preset.pop("description", ""))
        # A preset without a name (a budget overlay) adds its own name as a suffix.
        run_name = preset.pop("name", None) or (f"{run_name}-{Path(name).stem}" if run_name else Path(name).stem)
        values = merge(values, preset)
    if presets:
        values.setdefault("name", run_name)
        values.setdefault("description", " ".join(part for part in descriptions if part))
    for text in overrides or []:
        values = merge(values, parse_override(text))
    return from_dict(values)


def load(path: str | Path) -> ExperimentConfig:
    """Load a resolved config written to a run folder."""
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"{path} is not valid YAML ({type(error).__name__}); restore it from a copy, or write it again with "
            f"'pnn-ssl config' and the run's presets and overrides"
        ) from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path} contains a {type(values).__name__}, not a mapping of config sections; restore it from a copy")
    return from_dict(values)


def dump(config: ExperimentConfig) -> str:
    """Return the config as YAML text that `load` reads back to an equal config."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


# ---------------------------------------------------------------------------------------------
# Robustness suite.

PERTURBATIONS = ("weight-noise", "activation-noise", "pre-activation-noise", "neuron-pruning", "weight-pruning")


@dataclass(frozen=True)
class RobustnessConfig:
    """Perturbation levels and probe protocol of `pnn-ssl robustness` (Laydevant et al. 2023, section 3).

    Every perturbed network is probed on layer `layer` and compared with the unperturbed network
    probed the same way. The defaults keep the paper's probe (Adam 1e-3, batch 64, 20 epochs) but
    use fewer levels, draws and repeats than a full sweep. Three 4x1000 MNIST MLPs took 560 s of
    CPU time on one thread of a 2 vCPU AMD EPYC (the README's robustness section has the details).
    The levels are ours, because the paper gives its curves without their numbers.
    """

    perturbations: tuple[str, ...] = PERTURBATIONS  # which kinds to run
    layer: int = -1  # 1-based hidden layer that the probe reads; -1 is the last one
    draws: int = 2  # simulated devices per noise level (pruning is deterministic and uses one)
    repeats: int = 2  # probes per device; the paper trains 3
    probe: str = "adam"  # adam: the paper's probe | ridge: closed-form, one fit per device
    probe_epochs: int = 20  # the paper's probe: Adam lr 1e-3, batch 64, 20 epochs
    probe_batch_size: int = 64
    probe_lr: float = 1e-3
    ridge_alpha: float = 1.0
    # Absolute std in weight units (trained 4x1000 MNIST MLPs have a weight std of about 0.02-0.03),
    # or a fraction of each layer's weight std with weight_noise_relative=true.
    weight_noise: tuple[float, ...] = (0.005, 0.01, 0.02, 0.04)
    weight_noise_relative: bool = False
    # Absolute std in activation units; mean ReLU outputs of those MLPs are about 0.1-3 per layer.
    activation_noise: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    pre_activation_noise: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    # false: the probe trains on clean representations and the noise acts on the test set only.
    # true: each device's probe trains on that device's noisy representations (one more pass
    # over the training set per device, one noise sample per image).
    probe_under_noise: bool = False
    neuron_pruning: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)  # thresholds on a neuron's mean activation
    weight_pruning: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)  # fraction of weights removed
    weight_pruning_scope: str = "global"  # global: one magnitude threshold for all layers | layer
    histogram_bins: int = 100  # weight histograms, on bins shared by all runs of one call
    group_size: int = 8  # feature matrices trained as one batched probe (each about 0.1-0.25 GB)
    seed: int = 0
    threads: int = 0  # torch intra-op threads (0: leave torch's default)
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        validate_robustness(self)


def validate_robustness(config: RobustnessConfig) -> None:
    """Raise ConfigError naming the first robustness value that is out of its allowed range."""
    unknown = [name for name in config.perturbations if name not in PERTURBATIONS]
    if unknown or not config.perturbations:
        raise ConfigError(
            f"invalid robustness.perturbations={list(config.perturbations)!r}; expected a non-empty list of "
            f"{', '.join(PERTURBATIONS)}"
        )
    if config.probe not in ("adam", "ridge"):
        raise ConfigError(f"invalid robustness.probe={config.probe!r}; expected adam or ridge")
    if config.weight_pruning_scope not in ("global", "layer"):
        raise ConfigError(f"invalid robustness.weight_pruning_scope={config.weight_pruning_scope!r}; expected global or layer")
    check_device_name("robustness.device", config.device)
    if config.layer == 0:
        raise ConfigError("invalid robustness.layer=0; hidden layers are numbered from 1 (or -1 for the last)")
    for name in ("draws", "repeats", "probe_epochs", "probe_batch_size", "probe_lr", "histogram_bins", "group_size"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"invalid robustness.{name}={getattr(config, name)!r}; it must be greater than 0")
    for name in ("weight_noise", "activation_noise", "pre_activation_noise", "neuron_pruning", "ridge_alpha", "threads"):
        values = getattr(config, name)
        if any(not value >= 0 for value in (values if isinstance(values, tuple) else (values,))):
            raise ConfigError(f"invalid robustness.{name}={values!r}; values must be 0 or greater")
    if any(not 0.0 <= value <= 1.0 for value in config.weight_pruning):
        raise ConfigError(f"invalid robustness.weight_pruning={config.weight_pruning!r}; sparsities must lie in [0, 1]")


def resolve_robustness(overrides: list[str] | None = None) -> RobustnessConfig:
    """Build a RobustnessConfig from `robustness.key=value` overrides on the defaults."""
    values: dict[str, Any] = {}
    for text in overrides or []:
        parsed = parse_override(text)
        if set(parsed) != {"robustness"} or not isinstance(parsed["robustness"], dict):
            raise ConfigError(f"invalid override {text!r}; only robustness.* fields can be set here")
        values = merge(values, parsed["robustness"])
    return _build(RobustnessConfig, values, RobustnessConfig(), "robustness.")
