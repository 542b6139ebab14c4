"""Edge configuration: the file, the environment and flags, in that order; errors name the key."""
import argparse
from pathlib import Path

import pytest

from edge_engine.config import ConfigError, EdgeConfig, add_arguments, load_config
from edge_engine.signals import build_drivers

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edge" / "edge.toml"


def parse(*flags):
    return add_arguments(argparse.ArgumentParser()).parse_args(list(flags))


def write(tmp_path, text, name="edge.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_example_loads_and_its_signals_build():
    config = load_config(EXAMPLE, environ={})
    assert isinstance(config, EdgeConfig) and config.id == "wl-1"
    assert config.metadata["region"] == "US" and config.capabilities.ram_kb == 524288
    assert [s["name"] for s in config.signals] == ["vibration", "outside_temperature"]
    assert config.store == EXAMPLE.parent / "state" / "wl-1"  # relative to the file
    drivers = build_drivers(config.signals)
    assert set(drivers.signals) == {"vibration", "outside_temperature"}
    caps = config.capabilities_dict(drivers.describe())
    assert caps["ram_kb"] == 524288 and "numpy" in caps["runtimes"] and caps["signals"][0]["name"]


def test_flags_override_the_file_and_the_environment_gives_the_token(tmp_path):
    path = write(tmp_path, '''
id = "a"
token = "from-file"
heartbeat_s = 10
[metadata]
region = "US"
kind = "dumper"
[buffer]
max_records = 50
[[signals]]
name = "t"
shape = "constant"
offset = 1
''')
    config = load_config(path, parse("--heartbeat", "2", "--meta", "region=EU", "--meta", "year=2019",
                                     "--buffer-bytes", "0", "--signal", "name=t,shape=sine,rate_hz=4",
                                     "--signal", '{"name": "u", "kind": "udp", "port": 9000}',
                                     "--trusted-key", "k1"), environ={"STREAMQL_EDGE_TOKEN": "from-env"})
    assert config.heartbeat_s == 2.0 and config.token == "from-env"
    assert config.metadata == {"region": "EU", "kind": "dumper", "year": 2019}
    assert config.buffer.max_records == 50 and config.buffer.max_bytes is None
    assert [(s["name"], s.get("shape")) for s in config.signals] == [("t", "sine"), ("u", None)]
    assert config.trusted_keys == ["k1"]
    secret = tmp_path / "token"
    secret.write_text("from-token-file\n")
    assert load_config(path, parse("--token-file", str(secret)), environ={"STREAMQL_EDGE_TOKEN": "env"}).token \
        == "from-token-file"
    assert load_config(path, parse(), environ={}).token == "from-file"
    assert "from-file" not in repr(load_config(path, environ={})) and load_config(path, environ={}).to_dict()["token"] == "***"


def test_a_token_on_the_command_line_is_refused_saying_what_to_use(capsys, tmp_path):
    with pytest.raises(SystemExit) as caught:
        parse("--token", "sqf_secret")
    assert caught.value.code == 2
    message = capsys.readouterr().err
    assert "visible" in message and "--token-file" in message and "STREAMQL_EDGE_TOKEN" in message
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError) as refused:
        load_config(None, parse("--id", "a", "--token-file", str(empty)), environ={})
    assert "empty" in str(refused.value)


def test_slots_and_the_guard_are_configured_in_the_file_or_by_flags(tmp_path):
    path = write(tmp_path, 'id = "a"\n[limits]\nmax_queries = 16\n[guard]\nenabled = true\nquarantine_s = 60\n')
    config = load_config(path, parse("--max-queries-per-principal", "4", "--max-rss-mb", "300"), environ={})
    assert (config.limits.max_queries, config.limits.max_queries_per_principal) == (16, 4)
    assert (config.guard.enabled, config.guard.max_rss_mb, config.guard.quarantine_s) == (True, 300.0, 60.0)
    assert load_config(None, parse("--id", "b"), environ={}).guard.enabled is False
    assert load_config(None, parse("--id", "b", "--watchdog"), environ={}).guard.enabled is True


def test_flags_alone_are_enough():
    config = load_config(None, parse("--id", "e-7", "--federation", "http://127.0.0.1:9/", "--signal",
                                     "name=v,rate_hz=100,spikes.rate_per_s=1.5"), environ={})
    assert config.id == "e-7" and config.signals[0]["spikes"] == {"rate_per_s": 1.5}
    assert config.source is None and config.store.name == "e-7"


@pytest.mark.parametrize("text, key", [
    ('idd = "x"', "idd"),
    ('id = "x"\n[buffer]\nmax_recrods = 1', "buffer.max_recrods"),
    ('id = "x"\n[buffer]\nfsync = "often"', "buffer.fsync"),
    ('id = "x"\n[buffer]\nmax_records = -1', "buffer.max_records"),
    ('id = "bad id"', "id"),
    ('token = "t"', "id"),
    ('id = "x"\nfederation = "ftp://h"', "federation"),
    ('id = "x"\nheartbeat_s = 0', "heartbeat_s"),
    ('id = "x"\nlog_level = "loud"', "log_level"),
    ('id = "x"\n[metadata]\n"bad key" = 1', "metadata.bad key"),
    ('id = "x"\n[metadata]\nk = [1, 2]', "metadata.k"),
    ('id = "x"\n[capabilities]\nram_kb = "lots"', "capabilities.ram_kb"),
    ('id = "x"\n[limits]\nrows = 0', "limits.rows"),
    ('id = "x"\n[reconnect]\ninitial_s = 5\nmax_s = 1', "reconnect.max_s"),
    ('id = "x"\ntrusted_keys = "k"', "trusted_keys"),
    ('id = "x"\nmetadata = 3', "metadata"),
    ('id = "x"\n[[signals]]\nname = "v"\nrate_hz = "fast"', "signals[0].rate_hz (v)"),
    ('id = "x"\n[[signals]]\nname = "v"\n[[signals]]\nname = "v"', "signals[1].name"),
    ('id = "x"\n[[signals]]\nname = "v"\nkind = "csv"\npath = "nope.csv"\nrate_hz = 1\nspeed = -1', "signals[0].speed (v)"),
])
def test_errors_name_the_key_and_the_file(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == key and str(path) in str(info.value)


def test_suggestions_and_flag_errors_name_the_command_line(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'heartbeat_s'"):
        load_config(write(tmp_path, 'id = "x"\nheartbeat = 3'), environ={})
    path = write(tmp_path, 'id = "x"')
    with pytest.raises(ConfigError) as info:
        load_config(path, parse("--heartbeat", "-1"), environ={})
    assert info.value.source == "command line" and info.value.key == "heartbeat_s"
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(path, parse("--meta", "novalue"), environ={})
    with pytest.raises(ConfigError, match="command line: signals"):
        load_config(path, parse("--signal", "name=z,shape=cube"), environ={})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML.*line 1"):
        load_config(write(tmp_path, "id = \n[x"), environ={})


def test_tls_and_reconnect_settings(tmp_path):
    path = write(tmp_path, 'id = "e"\n[tls]\nca_file = "ca.pem"\n[reconnect]\ninitial_s = 1\nmax_s = 8\n')
    config = load_config(path, parse("--client-cert", "/etc/e.crt", "--client-key", "/etc/e.key",
                                     "--reconnect-max", "4"), environ={})
    assert config.tls.ca_file == tmp_path / "ca.pem"                      # relative to the file
    assert (str(config.tls.cert_file), str(config.tls.key_file)) == ("/etc/e.crt", "/etc/e.key")
    assert (config.reconnect.initial_s, config.reconnect.max_s) == (1.0, 4.0)
    with pytest.raises(ConfigError) as caught:
        load_config(None, parse("--id", "e", "--client-cert", "e.crt"), environ={})
    assert caught.value.key == "tls.cert_file"


def test_every_setting_of_the_file_is_also_a_flag(tmp_path):
    from edge_engine.config import _SECTIONS, _TOP, _flag_overrides

    parser = add_arguments(argparse.ArgumentParser())
    flags = []
    (tmp_path / "token").write_text("t\n")
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "config", "token"):
            continue  # --token VALUE is refused: the token comes from --token-file
        flag = action.option_strings[-1]
        if action.dest == "token_file":
            flags += [flag, str(tmp_path / "token")]
        elif action.nargs == 0:
            flags.append(flag)
        elif action.choices:
            flags += [flag, list(action.choices)[0]]
        elif action.dest == "meta":
            flags += [flag, "region=US"]
        elif action.dest == "signal":
            flags += [flag, "name=v,kind=simulated,shape=sine,rate_hz=10"]
        else:
            flags += [flag, "1"]
    doc = _flag_overrides(parser.parse_args(flags))
    assert _TOP <= set(doc), f"settings without a flag: {_TOP - set(doc)}"
    for section, keys in _SECTIONS.items():
        assert keys <= set(doc.get(section, {})), f"[{section}] settings without a flag: {keys - set(doc[section])}"


def test_the_foreign_function_allow_list_is_the_operators_and_empty_by_default(tmp_path):
    import pytest
    import streamql
    from edge_engine.daemon import EdgeDaemon
    assert load_config(None, parse("--id", "b"), environ={}).foreign == []
    path = write(tmp_path, 'id = "a"\nforeign = ["math.sqrt"]\n')
    config = load_config(path, parse(), environ={})
    assert config.foreign == ["math.sqrt"]
    assert load_config(None, parse("--id", "b", "--foreign", "math.*"), environ={}).foreign == ["math.*"]
    daemon = EdgeDaemon(config, drivers=build_drivers([]), start_drivers=False)
    daemon.trusted_keys = None   # (set when the daemon starts; the engine it builds is what is tested)
    engine = daemon._new_engine()
    engine.execute("create function root(Real x) -> Real as foreign 'py:math.sqrt';")
    assert list(engine.query("root(16.0);")) == [4.0]
    with pytest.raises(streamql.QueryError, match="allow-list"):
        engine.execute("create function cwd() -> Charstring as foreign 'py:os.getcwd';")
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, 'id = "a"\nforeign = "math.*"\n', "bad.toml"), parse(), environ={})
