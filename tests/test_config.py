import json

import pytest

from augforge.config import RunConfig, apply_overrides, parse_set, resolve
from augforge.errors import ConfigError
from augforge.presets import PRESETS


def test_set_overrides_are_typed_and_dotted():
    cfg = resolve("", parse_set(["train.lr_g=1e-3", "train.steps=7", "data.balance=true", "generator.ch=32", "dataset.classes=mel,bcc"]))
    assert cfg.train.lr_g == 1e-3 and isinstance(cfg.train.steps, int) and cfg.data.balance is True
    assert cfg.generator == {"ch": 32} and cfg.dataset == {"classes": "mel,bcc"}


def test_flat_keys_round_trip_through_set():
    cfg = resolve("", {"train.lr_d": "4e-4", "discriminator.width": "16"})
    flat = cfg.flat()
    assert flat["train.lr_d"] == 4e-4 and flat["discriminator.width"] == 16
    replay = apply_overrides(RunConfig(), {k: v for k, v in flat.items()})
    assert replay == cfg


def test_json_round_trip():
    cfg = resolve("", {"train.seed": "3", "model.generator": "dcgan"})
    again = RunConfig.from_json_dict(json.loads(cfg.to_json()))
    assert again == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ({"train.lr": "1"}, "unknown config key 'train.lr'; valid train keys: device, seed"),
        ({"trian.lr_g": "1"}, "unknown config section 'trian'"),
        ({"train.steps": "many"}, "expected int"),
        ({"data.balance": "maybe"}, "expected bool"),
        ({"steps": "3"}, "needs a section"),
    ],
)
def test_bad_overrides_fail_naming_key_and_choices(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve("", override)


def test_bad_set_syntax():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set(["train.lr_g"])


def test_unknown_preset_lists_valid():
    with pytest.raises(ConfigError, match="available: "):
        resolve("no-such-preset")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves(name):
    cfg = resolve(name)
    assert cfg.preset == name
