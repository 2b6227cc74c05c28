import pytest

from scbundle.core.config import config_from_dict, embedded_default, load_config, parse_walltime
from scbundle.core.errors import ConfigError
from scbundle.stages.registry import check_config


def test_embedded_default_is_valid(tmp_path):
    c = config_from_dict(embedded_default(tmp_path), "x")
    assert c.site().link == "local"
    assert c.database.endswith("scbundle.db")


def test_unknown_key_named(tmp_path):
    d = embedded_default(tmp_path)
    d["sites"]["local"]["cores_per_nod"] = 3
    with pytest.raises(ConfigError, match=r"unknown key 'sites.local.cores_per_nod'"):
        config_from_dict(d, "x")


def test_wrong_type_named(tmp_path):
    d = embedded_default(tmp_path)
    d["sites"]["local"]["max_nodes"] = "many"
    with pytest.raises(ConfigError, match=r"sites.local.max_nodes"):
        config_from_dict(d, "x")


def test_fill_factor_range(tmp_path):
    d = embedded_default(tmp_path)
    d["sites"]["local"]["fill_factor"] = 1.5
    with pytest.raises(ConfigError, match=r"fill_factor"):
        config_from_dict(d, "x")


def test_relative_root_refused(tmp_path):
    d = embedded_default(tmp_path)
    d["sites"]["local"]["remote_root"] = "scratch"
    with pytest.raises(ConfigError, match="remote_root.*absolute"):
        config_from_dict(d, "x")


def test_unknown_stage_refused(tmp_path):
    d = embedded_default(tmp_path)
    d["stages"] = {"chop": {"threads": 1}}
    config = config_from_dict(d, "x")  # the schema; the stage names are the registry's to check
    with pytest.raises(ConfigError, match="unknown stage"):
        check_config(config)


def test_default_site_must_exist(tmp_path):
    d = embedded_default(tmp_path)
    d["default_site"] = "mustang"
    with pytest.raises(ConfigError, match="default_site"):
        config_from_dict(d, "x")


def test_toml_file_and_missing_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('database = "sqlite:///x.db"\nworkdir = "/tmp/w"\n[sites.local]\nremote_root = "/r"\npermanent_root = "/p"\nbogus = 1\n')
    with pytest.raises(ConfigError, match=r"c.toml: unknown key 'sites.local.bogus'"):
        load_config(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    f.write_text("database = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f)


def test_walltime():
    assert parse_walltime("12:00:00") == 43200
    assert parse_walltime("1-00:00:01") == 86401
    with pytest.raises(ValueError):
        parse_walltime("12h")
