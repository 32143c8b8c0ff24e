"""Config loading: examples pass; each class of mistake exits 2 naming file, line and key."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from roomwatch.core.configbase import ConfigError, load_yaml, parse_duration
from tests.helpers import ROOT, cli, documented_files

EXAMPLES = sorted((ROOT / "config").glob("*.example.yaml"))


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"agent.example.yaml", "collector.example.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_check_config(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent example reads its token as systemd hands it over (the installer generates it).
    (tmp_path / "agent-token").write_text("a-generated-token-0123456789abcdef\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    res = cli("check-config", str(path))
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout


@pytest.mark.peer
def test_examples_carry_no_usable_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No token in the examples: the agent's comes from a file, the collector's hash matches nothing."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in EXAMPLES)
    assert "s3cret" not in text
    assert re.search(r"^\s+token:", text, re.M) is None, "an example sets a literal token"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    from roomwatch.collector.config import load_collector_config

    cfg = load_collector_config(str(ROOT / "config" / "collector.example.yaml"))
    assert [a.token_hash for a in cfg.agents] == ["sha256:" + "0" * 64]
    res = cli("check-config", str(ROOT / "config" / "agent.example.yaml"))
    assert res.returncode == 2 and "agent-token" in res.stderr  # without the generated file it cannot run


def _check(tmp_path: Path, text: str, name: str = "conf.yaml") -> tuple[int, str]:
    f = tmp_path / name
    f.write_text(text)
    res = cli("check-config", str(f))
    return res.returncode, res.stderr


AGENT_OK = """\
agent:
  id: a1
collector:
  urls: [http://127.0.0.1:9640]
  token: t0ken
"""


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [
        # unknown (typo'd) key
        (AGENT_OK + "  push_intervl: 10s\n", 6, "collector.push_intervl", "unknown key"),
        # wrong type
        (AGENT_OK.replace("id: a1", "id: a1\n  listen: 127.0.0.1:9641\n  interval: [1, 2]"), 4, "agent.interval",
         "duration"),
        (AGENT_OK + "host:\n  enabled: maybe\n", 7, "host.enabled", "expected true or false"),
        (AGENT_OK + "  max_batch_samples: many\n", 6, "collector.max_batch_samples", "expected a whole number"),
        # bad duration
        (AGENT_OK + "  push_interval: 10 seconds\n", 6, "collector.push_interval", "not a duration"),
        (AGENT_OK + "  push_interval: 10\n", 6, "collector.push_interval", "has no unit"),
        # missing required
        ("agent:\n  id: a1\ncollector:\n  urls: [http://127.0.0.1:9640]\n", 3, "collector.token", "required"),
        # unknown driver
        (AGENT_OK + "devices:\n  - name: d1\n    driver: nosuchdriver\n", 8, "devices[0].driver", "nosuchdriver"),
        # duplicate device name
        (AGENT_OK + "devices:\n  - name: host\n    driver: host\n", 7, "devices[0].name", "already used"),
    ],
    ids=["unknown-key", "wrong-type-list", "wrong-type-bool", "wrong-type-int", "bad-duration", "duration-no-unit",
         "missing-required", "unknown-driver", "duplicate-name"],
)
def test_agent_mistakes_name_file_line_key(tmp_path: Path, text: str, line: int, key: str, words: str) -> None:
    rc, err = _check(tmp_path, text)
    assert rc == 2, err
    assert f"conf.yaml:{line}: {key}:" in err, err
    assert words in err, err


COLLECTOR_OK = """\
listen: 127.0.0.1:9640
agents:
  - id: a1
    token: t0ken
"""


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [
        (COLLECTOR_OK + "agent_timout: 1m\n", 5, "agent_timout", "unknown key"),
        (COLLECTOR_OK + "max_body: lots\n", 5, "max_body", "not a size"),
        (COLLECTOR_OK + "  - id: a2\n", 5, "agents[1]", "token"),
        (COLLECTOR_OK + "channels:\n  - name: x\n    type: webhook\n    url: http://h/\nroutes:\n  - channels: [y]\n", 10,
         "routes[0].channels[0]", "no channel named 'y'"),
        (COLLECTOR_OK.replace("127.0.0.1:9640", "localhost"), 1, "listen", "host:port"),
        (COLLECTOR_OK + "  - id: a2\n    token: t0ken\n", 6, "agents[1].token", "same token as agent 'a1'"),
        (COLLECTOR_OK + "  - id: a2\n    token_hash: sha256:" + hashlib.sha256(b"t0ken").hexdigest() + "\n", 6,
         "agents[1].token_hash", "same token as agent 'a1'"),
    ],
    ids=["unknown-key", "bad-size", "missing-token", "unknown-channel", "bad-listen", "shared-token",
         "shared-token-hash"],
)
def test_collector_mistakes_name_file_line_key(tmp_path: Path, text: str, line: int, key: str, words: str) -> None:
    rc, err = _check(tmp_path, text)
    assert rc == 2, err
    assert f"conf.yaml:{line}: {key}:" in err, err
    assert words in err, err


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    rc, err = _check(tmp_path, "agent:\n  id: a1\n  site: [unclosed\ncollector:\n  urls: []\n")
    assert rc == 2
    assert re.search(r"conf\.yaml:\d+: YAML syntax error", err), err


def test_every_problem_reported_together(tmp_path: Path) -> None:
    rc, err = _check(tmp_path, AGENT_OK + "  push_interval: soon\n  bogus: 1\n")
    assert rc == 2
    assert "collector.push_interval" in err and "collector.bogus" in err


def test_missing_file_is_exit_2(tmp_path: Path) -> None:
    res = cli("check-config", str(tmp_path / "nope.yaml"))
    assert res.returncode == 2
    assert "nope.yaml: file not found" in res.stderr


def test_unknown_kind_is_exit_2(tmp_path: Path) -> None:
    rc, err = _check(tmp_path, "something: else\n")
    assert rc == 2 and "agent or a collector" in err


def test_secret_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from roomwatch.agent.config import load_agent_config

    (tmp_path / "tok").write_text("from-file\n")
    f = tmp_path / "a.yaml"
    f.write_text(f"agent: {{id: a1}}\ncollector:\n  urls: [http://x:1]\n  token_file: {tmp_path / 'tok'}\n")
    assert load_agent_config(str(f)).collector.token.get_secret_value() == "from-file"

    monkeypatch.setenv("RW_TEST_TOKEN", "from-env")
    f.write_text("agent: {id: a1}\ncollector:\n  urls: [http://x:1]\n  token: ${RW_TEST_TOKEN}\n")
    cfg = load_agent_config(str(f))
    assert cfg.collector.token.get_secret_value() == "from-env"
    assert "from-env" not in repr(cfg)  # secrets never appear in reprs (and so in logs)


def test_unset_env_var_is_an_error_with_line(tmp_path: Path) -> None:
    rc, err = _check(tmp_path, "agent: {id: a1}\ncollector:\n  urls: [http://x:1]\n  token: ${RW_NOT_SET_ANYWHERE}\n")
    assert rc == 2
    assert "conf.yaml:4: collector.token: environment variable RW_NOT_SET_ANYWHERE is not set" in err


def test_unreadable_token_file(tmp_path: Path) -> None:
    rc, err = _check(tmp_path, AGENT_OK.replace("token: t0ken", f"token_file: {tmp_path / 'missing'}"))
    assert rc == 2 and "cannot read" in err


@pytest.mark.parametrize("name", ["agent.yaml", "collector.yaml"])
def test_the_documented_smallest_files_are_accepted_as_they_are(tmp_path: Path, name: str) -> None:
    """docs/api.md's smallest valid pair: scripts and guides rely on these files."""
    files = documented_files()
    assert set(files) == {"agent.yaml", "collector.yaml"}
    rc, err = _check(tmp_path, files[name], name)
    assert rc == 0, err


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("1d", 86400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "s", "10x", "1h 30m", "-5s", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    f.write_text("agent:\n  id: a\n  id: b\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(f)
    assert "d.yaml:3: agent.id: this key appears twice" in str(err.value)


@pytest.mark.parametrize(("labels", "words"), [
    ("{rack-no: A1}", "'rack-no' is not a valid label name"),
    ("{le: x}", "label 'le' is set by roomwatch itself"),
    ("{device: other}", "label 'device' is set by roomwatch itself"),
    ("{__name__: x}", "not a valid label name"),
])
def test_bad_label_names_are_refused_at_load(tmp_path: Path, labels: str, words: str) -> None:
    # A label name the wire format refuses would make the collector reject every batch.
    rc, err = _check(tmp_path, AGENT_OK.replace("  id: a1", f"  id: a1\n  labels: {labels}"))
    assert rc == 2 and "conf.yaml:3: agent.labels:" in err and words in err, err


def test_collector_url_with_credentials_is_refused(tmp_path: Path) -> None:
    rc, err = _check(tmp_path, AGENT_OK.replace("http://127.0.0.1:9640", "http://user:pa55@127.0.0.1:9640"))
    assert rc == 2 and "must not carry a user or password" in err
    assert "pa55" not in err


def test_default_storage_directory_is_created(tmp_path: Path) -> None:
    from roomwatch.collector.config import CollectorConfig
    from roomwatch.collector.main import _prepare_storage

    cfg = CollectorConfig.model_validate({"agents": []})
    cfg.storage = str(tmp_path / "var-lib-roomwatch" / "collector.db")
    cfg.__pydantic_fields_set__.discard("storage")  # as if the file left storage: out
    _prepare_storage(cfg)
    assert (tmp_path / "var-lib-roomwatch").is_dir()
    explicit = CollectorConfig.model_validate({"agents": [], "storage": str(tmp_path / "nope" / "c.db")})
    _prepare_storage(explicit)  # an explicit path is the user's to create: the store open reports it
    assert not (tmp_path / "nope").exists()


def test_check_config_counts_in_the_right_number(tmp_path: Path) -> None:
    """One agent, one channel, one device: "1 agent", not "1 agents"."""
    files = documented_files()
    collector = tmp_path / "collector.yaml"
    collector.write_text(files["collector.yaml"])
    res = cli("check-config", str(collector))
    assert res.returncode == 0 and "collector config, 1 agent, 1 channel)" in res.stdout, res.stdout
    agent = tmp_path / "agent.yaml"
    agent.write_text(AGENT_OK)
    res = cli("check-config", str(agent))
    assert res.returncode == 0 and ", 1 device)" in res.stdout, res.stdout


def test_plural() -> None:
    from roomwatch.core.plural import plural

    assert [plural(n, "agent") for n in (0, 1, 2)] == ["0 agents", "1 agent", "2 agents"]
    assert plural(1, "batch", "batches") == "1 batch" and plural(3, "batch", "batches") == "3 batches"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``roomwatch ARGS`` in this process (no child process: a unit test)."""
    import contextlib
    import io

    from roomwatch.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(list(args))
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())


def test_check_config_warns_on_a_short_or_example_token(tmp_path: Path) -> None:
    """The smallest contract file is valid, with a warning that never repeats the token (issue 12)."""
    f = tmp_path / "c.yaml"
    f.write_text("listen: 127.0.0.1:9640\nagents:\n  - id: room1-agent\n    token: s3cret-token\n"
                 "  - id: room2-agent\n    token: short-one\n  - id: room3-agent\n    token: Xq3v9LmPz7Kt2Wb8Rr5Nn1Yy\n")
    res = _cli("check-config", str(f))
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stdout.splitlines() if "WARNING" in line]
    assert len(warnings) == 2 and "agents[0].token" in warnings[0] and "examples" in warnings[0]
    assert "agents[1].token" in warnings[1] and "shorter than 16" in warnings[1]
    assert "s3cret-token" not in res.stdout and "short-one" not in res.stdout


def test_the_example_collector_file_accepts_no_token() -> None:
    """config/collector.example.yaml ships a placeholder hash that matches no token, and check-config says so."""
    from roomwatch.collector.agents import AgentRegistry
    from roomwatch.collector.config import load_collector_config

    cfg = load_collector_config(str(ROOT / "config" / "collector.example.yaml"))
    registry = AgentRegistry(cfg)
    for guess in ("s3cret-token", "changeme", "", "0" * 64):
        assert registry.authenticate(guess) is None
    res = _cli("check-config", str(ROOT / "config" / "collector.example.yaml"))
    assert res.returncode == 0 and "placeholder" in res.stdout


def test_an_error_about_a_secret_never_shows_its_value(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("agents:\n  - id: a\n    token: [9876543210]\nchannels:\n  - name: sms\n    type: aliyun_sms\n"
                 "    access_key_id: id\n    access_key_secret: 12345678987\n    phone_numbers: ['13800138000']\n"
                 "    sign_name: x\n    template_code: SMS_1\n")
    res = _cli("check-config", str(f))
    assert res.returncode == 2
    assert "12345678987" not in res.stderr and "9876543210" not in res.stderr
    assert "access_key_secret" in res.stderr and "not shown: it is a secret" in res.stderr


def test_check_config_reads_every_shipped_profile_and_rule_pack() -> None:
    """Every YAML file an install carries passes check-config: profiles and the rule pack are told by their keys."""
    files = sorted(str(p) for p in (ROOT / "drivers" / "snmp" / "profiles").glob("*.yaml"))
    files += sorted(str(p) for p in (ROOT / "drivers" / "modbus" / "profiles").glob("*.yaml"))
    files.append(str(ROOT / "alerts" / "defaults.yaml"))
    res = cli("check-config", *files)
    assert res.returncode == 0, res.stderr
    assert "SNMP profile 'kentix'" in res.stdout  # a profile with YAML merge keys (<<:), which config files refuse
    assert "Modbus register map" in res.stdout and "alert rules, " in res.stdout


def test_check_config_names_what_is_wrong_in_a_users_profile(tmp_path: Path) -> None:
    snmp = tmp_path / "acme.yaml"
    snmp.write_text("name: acme\nsource: ACME-MIB 1.0\ninclude: [ups-mib]\nmatch: [1.3.6.1.4.1.99999]\n"
                    "points:\n  - {metric: roomwatch_temperature_celsius, oid: 1.3.6.1.4.1.99999.1.0, scale: 0.1}\n")
    res = cli("check-config", str(snmp))
    assert res.returncode == 0 and "SNMP profile 'acme'" in res.stdout, res.stderr  # includes a shipped profile
    snmp.write_text("name: acme\nmatch: [1.3.6.1.4.1.99999]\npoints:\n  - {metric: roomwatch_temprature, oid: 1.3.6.1.4.1.1.0}\n")
    res = cli("check-config", str(snmp))
    assert res.returncode == 2 and "acme.yaml" in res.stderr and "roomwatch_temprature" in res.stderr
    modbus = tmp_path / "sensor.yaml"
    modbus.write_text("title: my sensor\nsource: its manual\nregisters:\n  - {name: t, metric: temperature, function: input,"
                      " address: 1, type: int17}\n")
    res = cli("check-config", str(modbus))
    assert res.returncode == 2 and "int17" in res.stderr
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - alert: Hot\n    metric: roomwatch_temperature_celsius\n    op: '>'\n    threshold: 30\n"
                     "    severity: urgent\n")
    res = cli("check-config", str(rules))
    assert res.returncode == 2 and "severity" in res.stderr
