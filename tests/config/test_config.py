"""Presets, overrides and the error messages for bad keys and values."""

import pytest

from pnn_ssl import config as config_module
from pnn_ssl.config import ConfigError, ExperimentConfig


def test_defaults_carry_paper_values():
    config = ExperimentConfig()
    assert config.train.lr == 1e-4
    assert config.train.batch_size == 256
    assert config.train.epochs == 1000
    assert (config.loss.sim_coeff, config.loss.std_coeff, config.loss.cov_coeff) == (25.0, 25.0, 1.0)
    assert config.augment.scale == (0.9, 1.1)


def test_every_preset_resolves():
    for name in config_module.preset_names():
        assert isinstance(config_module.resolve([name]), ExperimentConfig)


def test_budget_overlay_keeps_experiment_and_suffixes_name():
    config = config_module.resolve(["supervised", "smoke"])
    assert config.loss.objective == "cross-entropy"
    assert config.train.epochs == 2
    assert config.name == "supervised-mlp-smoke"


def test_reference_code_preset_differs_from_text():
    config = config_module.resolve(["reference-code"])
    assert config.model.bias is False
    assert config.augment.scale == (0.7, 1.3)
    assert config.train.weight_decay == 1e-6


def test_overrides_parse_yaml_values():
    config = config_module.resolve(["paper"], ["train.epochs=7", "probe.layers=[1, 2]", "data.data_dir=/tmp/x"])
    assert config.train.epochs == 7
    assert config.probe.layers == (1, 2)
    assert config.data.data_dir == "/tmp/x"


def test_named_augmentation_with_field_override():
    config = config_module.resolve(["paper"], ["augment=mnist-supervised", "augment.rotation_deg=7"])
    assert config.augment.rotation_deg == 7.0
    assert config.augment.scale == (0.9, 1.1)
    assert config.augment.contrast == 0.0


def test_dump_and_load_round_trip(tmp_path):
    config = config_module.resolve(["reference-code", "smoke"], ["seed=3"])
    path = tmp_path / "config.yaml"
    path.write_text(config_module.dump(config))
    assert config_module.load(path) == config


@pytest.mark.parametrize(("text", "problem"), [("model: [unclosed\n", "is not valid YAML"), ("- 1\n- 2\n", "contains a list")])
def test_load_damaged_file(tmp_path, text, problem):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{path} {problem}.*restore it from a copy"):
        config_module.load(path)


def test_checkpoint_interval_must_be_positive():
    with pytest.raises(ConfigError, match=r"invalid train.checkpoint_every=0; it must be greater than 0"):
        config_module.resolve([], ["train.checkpoint_every=0"])


def test_unknown_key_is_rejected_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'; did you mean 'train.epochs'"):
        config_module.resolve([], ["train.epoch=3"])


def test_nonpositive_widths_shown_as_list():
    with pytest.raises(ConfigError, match=r"^invalid model.widths=\[0\]; expected positive layer widths$"):
        config_module.resolve([], ["model.widths=[0]"])


def test_unknown_section_is_rejected():
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        config_module.resolve([], ["trian.epochs=3"])


def test_wrong_type_is_rejected_by_name():
    with pytest.raises(ConfigError, match=r"invalid type for train.epochs: got 'ten', expected an integer"):
        config_module.resolve([], ["train.epochs=ten"])
    with pytest.raises(ConfigError, match=r"invalid type for model.bias: got 1, expected true or false"):
        config_module.resolve([], ["model.bias=1"])


def test_impossible_values_are_rejected_by_name():
    with pytest.raises(ConfigError, match=r"invalid train.lr=-0.1; it must be greater than 0"):
        config_module.resolve([], ["train.lr=-0.1"])
    with pytest.raises(ConfigError, match=r"invalid train.precision='fp16'; expected one of bf16, fp32"):
        config_module.resolve([], ["train.precision=fp16"])
    with pytest.raises(ConfigError, match=r"invalid probe.layers entry 5"):
        config_module.resolve([], ["probe.layers=[5]"])
    with pytest.raises(ConfigError, match=r"invalid augment.scale"):
        config_module.resolve([], ["augment.scale=[1.2, 0.8]"])


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match=r"unknown preset 'papr'; available presets: .*paper"):
        config_module.resolve(["papr"])


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="expected key=value"):
        config_module.resolve([], ["train.epochs"])


def test_preset_file_path_is_accepted(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: supervised\nname: mine\ntrain:\n  epochs: 3\n")
    config = config_module.resolve([str(path)])
    assert (config.name, config.train.epochs, config.loss.objective) == ("mine", 3, "cross-entropy")


def test_unknown_base_names_preset_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: nosuch\n")
    with pytest.raises(ConfigError, match=rf"^invalid base: 'nosuch' in preset '{path}': unknown preset 'nosuch'; available presets: "):
        config_module.resolve([str(path)])


def test_exponent_without_dot_is_a_number():
    assert config_module.resolve([], ["train.lr=5e-4"]).train.lr == 5e-4


def test_missing_cuda_device_is_a_config_error():
    from pnn_ssl.training.runtime import resolve_device

    if not __import__("torch").cuda.is_available():
        with pytest.raises(ConfigError, match=r"invalid train.device='cuda'"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"invalid train.device='gpu0'"):
        resolve_device("gpu0")


@pytest.mark.parametrize("override", ["train.device=tpu", "robustness.device=gpu"])
def test_device_unknown_name(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"invalid {key}='(tpu|gpu)'; expected auto, cpu, cuda or cuda:N"):
        if key.startswith("robustness"):
            config_module.resolve_robustness([override])
        else:
            config_module.resolve([], [override])


@pytest.mark.parametrize("value", ["nan", ".nan", "inf", "-.inf"])
def test_lr_non_finite_value(value):
    with pytest.raises(ConfigError, match=rf"invalid value for train.lr: got .*, expected a finite number"):
        config_module.resolve([], [f"train.lr={value}"])


def test_spsa_reference_code_preset_has_authors_settings():
    config = config_module.resolve(["spsa-reference-code"])
    assert (config.train.optimizer_rule, config.train.mode, config.train.epochs, config.train.batch_size) == (
        "spsa", "sequential", 800, 128
    )
    assert (config.spsa.perturbations, config.spsa.perturbation, config.spsa.estimator) == (10, 0.01, "reference-code")
    assert (config.loss.objective, config.loss.bt_off_diagonal_power, config.loss.bt_lambda) == ("barlow-twins", 4, 5e-3)
    assert config.model.widths == (1000, 1000)


def test_spsa_combinations_are_rejected_by_name():
    with pytest.raises(ConfigError, match=r"optimizer_rule='spsa' with train.mode='end-to-end'.*train.mode=sequential"):
        config_module.resolve([], ["train.optimizer_rule=spsa"])
    with pytest.raises(ConfigError, match=r"physical.layer='analog-mvm' with train.optimizer_rule='backprop'"):
        config_module.resolve([], ["physical.layer=analog-mvm", "train.mode=sequential"])
    with pytest.raises(ConfigError, match=r"model.projector_batchnorm=true"):
        config_module.resolve(["spsa-cpu"], ["model.projector_batchnorm=true"])
    with pytest.raises(ConfigError, match=r"invalid physical.levels=1"):
        config_module.resolve(["spsa-analog-cpu"], ["physical.levels=1"])
    with pytest.raises(ConfigError, match=r"invalid spsa.estimator='spal'; expected one of spall, reference-code"):
        config_module.resolve(["spsa-cpu"], ["spsa.estimator=spal"])
    with pytest.raises(ConfigError, match=r"invalid spsa.perturbations=0; it must be greater than 0"):
        config_module.resolve(["spsa-cpu"], ["spsa.perturbations=0"])


def test_two_experiment_presets_are_rejected():
    with pytest.raises(ConfigError, match=r"presets \['supervised', 'paper'\] each define an experiment"):
        config_module.resolve(["supervised", "paper"])


def test_budget_before_experiment_is_rejected():
    with pytest.raises(ConfigError, match=r"put the experiment first: --preset supervised --preset smoke"):
        config_module.resolve(["smoke", "supervised"])
