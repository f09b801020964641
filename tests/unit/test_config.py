import pytest

from pipeline.config import Config, ConfigError, from_dict, load_config, to_dict
from tests.conftest import DIGITS_CONF


def test_file_and_overrides_land_in_typed_fields():
    cfg = load_config(DIGITS_CONF, ["train.epochs=3", "train.lr=0.01", "dist.engine=single", "data.tensor.shape=[1,4,16]"])
    assert isinstance(cfg, Config)
    assert cfg.name == "digits_cnn"
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01
    assert cfg.dist.engine == "single"
    assert cfg.data.tensor.shape == [1, 4, 16]
    assert cfg.data.source.classes == [str(i) for i in range(10)]


def test_defaults_come_from_the_dataclasses():
    cfg = load_config(None)
    assert cfg.train.batch_size == 64 and cfg.dist.engine == "horovod" and cfg.run.root == "runs"


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        load_config(DIGITS_CONF, ["train.epoch=3"])
    msg = str(err.value)
    assert "train.epoch" in msg and "epochs" in msg and "batch_size" in msg


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {type: cnn, widht: 3}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*model.widht.*valid keys in model"):
        load_config(bad)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(DIGITS_CONF, ["train.epochs=many"])


def test_invalid_choice_lists_the_choices():
    with pytest.raises(ConfigError, match=r"model.type='transformer' is not one of: mlp, cnn, rnn"):
        load_config(DIGITS_CONF, ["model.type=transformer"])


def test_missing_file_and_malformed_override():
    with pytest.raises(ConfigError, match="not found: .*nope.yaml"):
        load_config("conf/nope.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(DIGITS_CONF, ["train.epochs"])


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match="sum to 1"):
        load_config(DIGITS_CONF, ["data.split.train=0.9"])


def test_round_trip_through_plain_dict():
    cfg = load_config(DIGITS_CONF, ["train.epochs=2"])
    assert from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize("text,expect", [
    (b"name: x\ntrain: {lr: [1, 2\n", r"not valid YAML at line 3, column 1"),
    (b"name: \xff\xfe\n", r"not UTF-8 text .*save the file as UTF-8"),
    (b'name: x\nrun: {name: "${nope}"}\n', r"run.name: Interpolation key 'nope' not found; fix the \$\{...\} reference"),
    (b"- just\n- a list\n", r"the top level must be a mapping"),
])
def test_unreadable_config_files_are_one_clear_error(tmp_path, text, expect):
    path = tmp_path / "c.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=expect):
        load_config(path)


@pytest.mark.parametrize("override,expect", [
    ("train.lr=nan", "train.lr must be a finite number > 0, got nan"),
    ("train.lr=-0.1", "train.lr must be a finite number > 0"),
    ("train.weight_decay=inf", "train.weight_decay must be a finite number"),
    ("data.split.val=inf", "data.split fractions must be"),
    ("data.source.classes=[a,b,a]", r"data.source.classes lists \['a'\] more than once"),
    ("data.source.classes=[only]", "a classifier needs at least 2 classes"),
])
def test_non_finite_and_duplicate_values_are_refused(override, expect):
    with pytest.raises(ConfigError, match=expect):
        load_config(None, [override])


def test_fp16_is_refused_in_elastic_mode():
    from pipeline.config import ConfigError, load_config
    from tests.conftest import DIGITS_CONF

    with pytest.raises(ConfigError, match="train.precision=fp16 with dist.elastic=true"):
        load_config(DIGITS_CONF, ["train.precision=fp16", "dist.elastic=true"])
    assert load_config(DIGITS_CONF, ["train.precision=bf16", "dist.elastic=true"]).train.precision == "bf16"
