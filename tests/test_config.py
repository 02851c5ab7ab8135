"""Configuration: defaults, durations, the documented example, and one-line errors naming the key."""

from __future__ import annotations

import contextlib
import io
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bolina_scaler.cli import main
from bolina_scaler.config import ConfigError, ConsulConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent


def one_line_error(data: object) -> str:
    """The ConfigError ``data`` raises: one line (asserted), returned for the caller's checks."""
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    message = str(caught.value)
    assert "\n" not in message
    return message


class TestDefaults:
    def test_an_empty_mapping_is_the_defaults(self):
        """Every key is optional: ``{}`` (the defaults, on purpose) gives the documented defaults."""
        config = parse_config({})
        assert config.consul.service == "bolina"
        assert config.kubernetes.deployment == "bolina"
        assert config.consul.wait == 30
        assert config.dry_run is False

    def test_consul_address_from_environment(self, monkeypatch: pytest.MonkeyPatch):
        """consul.address defaults to $CONSUL_HTTP_ADDR, else the local agent."""
        monkeypatch.setenv("CONSUL_HTTP_ADDR", "http://consul.example:8500")
        assert parse_config({}).consul.address == "http://consul.example:8500"
        monkeypatch.delenv("CONSUL_HTTP_ADDR")
        assert parse_config({}).consul.address == "http://127.0.0.1:8500"

    def test_read_timeout_exceeds_consul_jitter(self):
        """The HTTP read timeout of a blocking query is longer than wait × 17/16."""
        for wait in (1, 60, 300, 600):
            assert ConsulConfig(wait=wait).read_timeout > wait * 17 / 16

    @pytest.mark.parametrize(
        ("text", "seconds"), [(30, 30.0), ("30s", 30.0), ("5m", 300.0), ("250ms", 0.25), ("1h", 3600.0), (1.5, 1.5)]
    )
    def test_durations(self, text, seconds):
        """Durations accept seconds or Go-style strings."""
        assert parse_config({"policy": {"startup_grace": text}}).policy.startup_grace == seconds


class TestExample:
    def test_the_shipped_example_is_valid(self):
        """config/config.yaml (also the ConfigMap) validates."""
        config = load_config(ROOT / "config" / "config.yaml")
        assert config.policy.min_replicas >= 0

    def test_every_key_of_the_example_is_commented(self):
        """Every run of settings in config/config.yaml starts with a comment (groups: above the group)."""
        lines = (ROOT / "config" / "config.yaml").read_text().splitlines()

        def indent(line: str) -> int:
            return len(line) - len(line.lstrip())

        def documented(number: int) -> bool:
            line = lines[number]
            for above in reversed(lines[:number]):
                text = above.strip()
                if text.startswith("#"):
                    return True
                if not text or indent(above) < indent(line):
                    # Reached the parent group header (or a gap): the group's comment counts.
                    return bool(text) and documented(lines.index(above)) if text else False
                # A setting right above (no blank line): one comment may document a small run
                # of related settings, e.g. retry_initial and retry_max.
            return False

        settings = [
            n for n, line in enumerate(lines) if line.strip() and not line.strip().startswith("#") and indent(line) > 0
        ]
        assert settings
        assert [lines[n].strip() for n in settings if not documented(n)] == []


class TestTraps:
    """Files and values that passed and ran on something other than what was meant (issue 23)."""

    @pytest.mark.parametrize(
        "text", ["", "\n\n", "# policy:\n#   min_replicas: 2\n", "null\n", "~\n", "---\n", "--- \n...\n"]
    )
    def test_an_empty_document_is_refused(self, tmp_path: Path, text: str):
        """An empty document (a ConfigMap mounted under the wrong key) is refused, naming the file and
        saying how to ask for the defaults; it used to run a live scaler on every default."""
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert str(caught.value) == (
            f"{path}: the document is empty (a ConfigMap mounted under the wrong key?); "
            "write {} to run on the defaults"
        )

    def test_an_explicit_empty_mapping_is_the_defaults(self, tmp_path: Path):
        """``{}`` is a choice, not an accident: it runs on the defaults."""
        path = tmp_path / "c.yaml"
        path.write_text("# the defaults, on purpose\n{}\n")
        assert load_config(path) == parse_config({})

    @pytest.mark.parametrize(
        ("text", "kind"),
        [("- policy\n", "a list"), ("policy\n", "a string"), ("3\n", "a number"), ("true\n", "a boolean")],
    )
    def test_a_document_that_is_not_a_mapping_names_the_file(self, tmp_path: Path, text: str, kind: str):
        """A list or a string at the top is one line naming the file and what it holds."""
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert (
            str(caught.value)
            == f"{path}: expected a mapping of sections (consul:, kubernetes:, policy:, ...), got {kind}"
        )

    def test_an_empty_section_says_so(self):
        """``policy:`` with nothing under it is null, not an empty section: the line says how to write one."""
        with pytest.raises(ConfigError, match=r"^policy: expected a mapping of keys, got null \(an empty section"):
            parse_config({"policy": None})

    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            ({"policy": {"min_replicas": True}}, "policy.min_replicas: expected an integer, got True"),
            ({"policy": {"max_replicas": "20"}}, "policy.max_replicas: expected an integer, got '20'"),
            ({"policy": {"scale_up": {"max_step": 4.0}}}, "policy.scale_up.max_step: expected an integer, got 4.0"),
            (
                {"policy": {"scale_down": {"max_step": False}}},
                "policy.scale_down.max_step: expected an integer, got False",
            ),
            (
                {"policy": {"mass_change": {"min_fleet": "4"}}},
                "policy.mass_change.min_fleet: expected an integer, got '4'",
            ),
            ({"consul": {"rate_burst": True}}, "consul.rate_burst: expected an integer, got True"),
            ({"consul": {"max_answer_bytes": 1e6}}, "consul.max_answer_bytes: expected an integer, got 1000000.0"),
            ({"http": {"port": "8080"}}, "http.port: expected an integer, got '8080'"),
            (
                {"policy": {"target_available_ratio": True}},
                "policy.target_available_ratio: expected a number, got True",
            ),
            ({"policy": {"scale_down_ratio": "0.8"}}, "policy.scale_down_ratio: expected a number, got '0.8'"),
            ({"policy": {"scale_down_max_load": True}}, "policy.scale_down_max_load: expected a number, got True"),
            (
                {"policy": {"scale_up": {"max_percent": True}}},
                "policy.scale_up.max_percent: expected a number, got True",
            ),
            ({"policy": {"mass_change": {"ratio": False}}}, "policy.mass_change.ratio: expected a number, got False"),
            ({"policy": {"demand": {"target_load": True}}}, "policy.demand.target_load: expected a number, got True"),
            ({"policy": {"demand": {"anticipation": "0"}}}, "policy.demand.anticipation: expected a number, got '0'"),
            ({"consul": {"rate_per_second": True}}, "consul.rate_per_second: expected a number, got True"),
            ({"dry_run": 1}, "dry_run: expected true or false, got 1"),
            ({"consul": {"tls_verify": "false"}}, "consul.tls_verify: expected true or false, got 'false'"),
            ({"consul": {"service": 5}}, "consul.service: expected a string, got 5"),
            ({"status": {"enabled": "yes"}}, "status.enabled: expected true or false, got 'yes'"),
        ],
    )
    def test_a_value_of_the_wrong_type_is_refused(self, data: dict[str, Any], expected: str):
        """Integers must be integers, numbers numbers (never a boolean), booleans booleans: lax
        parsing read ``min_replicas: true`` as 1 and ``max_replicas: "20"`` as 20."""
        with pytest.raises(ConfigError) as caught:
            parse_config(data)
        assert str(caught.value) == expected

    @pytest.mark.parametrize("key", ["startup_grace", "scale_down_stabilization", "max_snapshot_age"])
    def test_a_duration_is_never_a_boolean(self, key: str):
        """``startup_grace: true`` is not 1 second."""
        with pytest.raises(ConfigError, match=rf"^policy\.{key}: expected a duration .*got a boolean"):
            parse_config({"policy": {key: True}})

    def test_a_yaml_list_is_still_a_list(self):
        """Strict sections still read a YAML list of rules (strict pydantic alone takes only a tuple)."""
        rules = [{"type": "Pods", "value": 4, "period": "15s"}, {"type": "Percent", "value": 50, "period": "1m"}]
        policy = parse_config({"policy": {"scale_up": {"policies": rules}}}).policy
        assert [(rule.type, rule.value, rule.period) for rule in policy.scale_up.rules] == [
            ("Pods", 4, 15.0),
            ("Percent", 50, 60.0),
        ]

    def test_a_number_may_be_written_as_an_integer(self):
        """Where a number is asked, an integer is one: ``scale_down_max_load: 1``, ``max_percent: 50``."""
        policy = parse_config({"policy": {"scale_down_max_load": 1, "scale_up": {"max_percent": 50}}}).policy
        assert (policy.scale_down_max_load, policy.scale_up.max_percent) == (1.0, 50.0)

    def test_min_replicas_zero_is_refused_with_why_and_what_to_do(self):
        """A fleet at 0 could never leave it (nothing registers in Consul): refused, pointing at the pause."""
        with pytest.raises(ConfigError) as caught:
            parse_config({"policy": {"min_replicas": 0}})
        message = str(caught.value)
        assert message.startswith("policy.min_replicas: 0 is refused: at 0 replicas no server registers in Consul")
        assert "bolina-scaler/paused-replicas=0" in message
        assert parse_config({"policy": {"min_replicas": 1}}).policy.min_replicas == 1


class TestTokens:
    def test_token_file_wins_over_environment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        """consul.token_file beats $CONSUL_HTTP_TOKEN_FILE, which beats $CONSUL_HTTP_TOKEN."""
        (tmp_path / "a").write_text("from-config\n")
        (tmp_path / "b").write_text("from-env-file\n")
        monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-env")
        assert ConsulConfig().token() == "from-env"
        monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", str(tmp_path / "b"))
        assert ConsulConfig().token() == "from-env-file"
        assert ConsulConfig(token_file=tmp_path / "a").token() == "from-config"

    def test_missing_optional_secret_file_means_no_token_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        """A $CONSUL_HTTP_TOKEN_FILE that does not exist (optional Secret absent) falls through."""
        monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
        monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", str(tmp_path / "absent"))
        assert ConsulConfig().token() is None

    def test_token_never_in_the_effective_config(self, tmp_path: Path):
        """The printed config carries the token file's path, never the token."""
        (tmp_path / "t").write_text("s3cr3t")
        config = parse_config({"consul": {"token_file": str(tmp_path / "t")}})
        assert "s3cr3t" not in str(config.redacted())


class TestErrors:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            ({"policy": {"max_replicas": 0}}, "policy.max_replicas: "),
            ({"policy": {"min_replicas": 5, "max_replicas": 2}}, "policy.max_replicas: must be >= min_replicas (5)"),
            ({"policy": {"min_replicas": -1}}, "policy.min_replicas: "),
            ({"policy": {"target_available_ratio": 1.5}}, "policy.target_available_ratio: "),
            ({"policy": {"target_available_ratio": 0.7}}, "policy.scale_down_ratio: must be above"),
            ({"policy": {"scale_up": {"max_step": 0}}}, "policy.scale_up.max_step: "),
            ({"policy": {"scale_down": {"period": "soon"}}}, "policy.scale_down.period: expected a duration"),
            ({"policy": {"mass_change": {"ratio": 0}}}, "policy.mass_change.ratio: "),
            ({"policy": {"max_snapshot_age": 30}}, "policy.max_snapshot_age: must exceed consul.wait"),
            ({"consul": {"wait": "20m"}}, "consul.wait: Consul caps blocking queries at 10m"),
            ({"consul": {"wait": "5x"}}, "consul.wait: expected a duration"),
            ({"consul": {"address": "consul:8500"}}, "consul.address: expected http://host:port"),
            ({"consul": {"service": ""}}, "consul.service: "),
            ({"consul": {"consistency": "eventual"}}, "consul.consistency: "),
            ({"consul": {"wiat": "1m"}}, "consul.wiat: unknown key"),
            ({"kubernetes": {"namespace": "Not_Valid"}}, "kubernetes.namespace: "),
            ({"kubernetes": {"request_timeout": 0}}, "kubernetes.request_timeout: "),
            ({"http": {"port": 70000}}, "http.port: "),
            ({"logging": {"level": "loud"}}, "logging.level: "),
            ({"dry_run": "perhaps"}, "dry_run: "),
            ({"polcy": {}}, "polcy: unknown key"),
            # Upper bounds, said in the message (issue 13: each of these passed and broke at run time).
            ({"policy": {"scale_up": {"max_percent": 1e308}}}, "policy.scale_up.max_percent: Input should be less"),
            ({"consul": {"rate_per_second": 1e-300}}, "consul.rate_per_second: Input should be greater"),
            (
                {"consul": {"rate_per_second": 0.01, "wait": "60s"}, "policy": {"max_snapshot_age": "90s"}},
                "consul.rate_per_second: under churn one query every 100s",
            ),
            ({"policy": {"min_replicas": 3_000_000_000}}, "policy.min_replicas: Input should be less than or equal"),
            ({"policy": {"scale_up": {"max_step": 10**30}}}, "policy.scale_up.max_step: "),
            ({"policy": {"startup_grace": 1e308}}, "policy.startup_grace: Input should be less than or equal to 86400"),
            ({"consul": {"retry_initial": 1e-300}}, "consul.retry_initial: Input should be greater than or equal"),
            ({"policy": {"min_replicas": 10**5000}}, "policy.min_replicas: "),
            # Addresses and hosts.
            ({"http": {"host": "not a host!!"}}, "http.host: expected an IP address or a host name"),
            ({"http": {"host": ""}}, "http.host: "),
            ({"consul": {"address": "http://127.0.0.1:1 b"}}, "consul.address: expected http://host:port"),
            ({"consul": {"address": "http://127.0.0.1:99999"}}, "consul.address: "),
            ({"consul": {"address": "http://user:pw@consul:8500"}}, "consul.address: "),
            ({"consul": {"address": "http://consul:8500/v1"}}, "consul.address: "),
            ({"consul": {"address": "http://bad_host!:8500"}}, "consul.address: "),
            ({"consul": {"datacenter": "dc1&stale"}}, "consul.datacenter: "),
            ({"bad\nkey": 1}, "'bad\\nkey': unknown key"),
        ],
    )
    def test_one_line_naming_the_key(self, data, expected):
        """Each invalid value fails with a single line that starts with the offending key."""
        message = one_line_error(data)
        assert message.startswith(expected), message

    def test_not_a_mapping(self):
        """A YAML document that is not a mapping is rejected at the root."""
        with pytest.raises(ConfigError, match=r"^<root>: expected a mapping of sections .*, got a list$"):
            parse_config([1, 2])
        with pytest.raises(ConfigError, match=r"^<root>: the document is empty"):
            parse_config(None)

    def test_yaml_syntax_error_names_the_line(self, tmp_path: Path):
        """Broken YAML reports the file and line."""
        path = tmp_path / "c.yaml"
        path.write_text("policy:\n  min_replicas: [1\n")
        with pytest.raises(ConfigError, match=r"c\.yaml: line \d+"):
            load_config(path)

    def test_missing_referenced_files(self, tmp_path: Path):
        """A token_file, ca_file or kubeconfig that does not exist is named."""
        path = tmp_path / "c.yaml"
        path.write_text(f"consul:\n  token_file: {tmp_path / 'nope'}\n")
        with pytest.raises(ConfigError, match=r"^consul\.token_file: no such file"):
            load_config(path)
        path.write_text(f"kubernetes:\n  kubeconfig: {tmp_path / 'nope'}\n")
        with pytest.raises(ConfigError, match=r"^kubernetes\.kubeconfig: no such file"):
            load_config(path)

    def test_unreadable_file(self, tmp_path: Path):
        """A config path that does not exist is one clear line."""
        with pytest.raises(ConfigError, match="cannot read config file"):
            load_config(tmp_path / "absent.yaml")

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            (b"policy:\n  min_replicas: \xff\n", r"cannot read config file: not UTF-8 text \(byte 0xff"),
            (b"[" * 50_000 + b"]" * 50_000, r"nested too deeply"),
            (b"policy:\n  min_replicas: " + b"9" * 5000 + b"\n", r"invalid value: Exceeds the limit"),
            (b"policy:\n  min_replicas: 1\n  min_replicas: 2\n", r"line 3: found the key 'min_replicas' twice"),
            (b"policy: {}\nhttp: {}\npolicy:\n  max_replicas: 9\n", r"key 'policy' twice \(first on line 1\)"),
            (b"x: 1\n" * 300_000, r"larger than 1048576 bytes"),
        ],
        ids=["not-utf8", "deep", "huge-int", "duplicate-key", "second-section", "huge-file"],
    )
    def test_load_errors_are_one_line(self, tmp_path: Path, content: bytes, expected: str):
        """Every way a file can fail to load is a ConfigError of one line (exit 2), not a traceback."""
        path = tmp_path / "c.yaml"
        path.write_bytes(content)
        with pytest.raises(ConfigError, match=expected) as caught:
            load_config(path)
        assert "\n" not in str(caught.value)

    def test_merge_keys_are_not_duplicates(self, tmp_path: Path):
        """YAML merge keys (<<) may be overridden: that is not a key given twice."""
        path = tmp_path / "c.yaml"
        path.write_text("policy:\n  scale_up: &up {max_step: 2, period: 5s}\n  scale_down: {<<: *up, max_step: 1}\n")
        config = load_config(path)
        assert (config.policy.scale_down.max_step, config.policy.scale_down.period) == (1, 5.0)

    @pytest.mark.parametrize(
        ("special", "kind"),
        [
            ("fifo", "a FIFO (named pipe)"),
            ("socket", "a socket"),
            ("/dev/zero", "a character device"),
            ("/dev/null", "a character device"),
            ("directory", "a directory"),
        ],
    )
    def test_anything_but_a_regular_file_is_refused_at_once(self, tmp_path: Path, special: str, kind: str):
        """A FIFO (open() blocked until a writer came, SIGTERM unanswered), a socket, a device or a
        directory as the config file: one line naming what it is, without blocking or reading it."""
        with contextlib.ExitStack() as stack:
            path = _special_file(tmp_path, special, stack)
            with pytest.raises(ConfigError) as caught:
                load_config(path)
        assert str(caught.value) == f"{path}: cannot read config file: {kind}, not a regular file"

    def test_a_fifo_named_as_the_token_file_is_refused(self, tmp_path: Path):
        """The files the config names are read the same way: a FIFO token file does not block check-config."""
        fifo = tmp_path / "token"
        os.mkfifo(fifo)
        path = tmp_path / "c.yaml"
        path.write_text(f"consul:\n  token_file: {fifo}\n")
        with pytest.raises(
            ConfigError, match=r"^consul\.token_file: cannot use .*a FIFO \(named pipe\), not a regular"
        ):
            load_config(path)

    def test_a_configmap_symlink_is_followed(self, tmp_path: Path):
        """A ConfigMap mounts config.yaml as a symlink to ..data/config.yaml: that is a regular file."""
        (tmp_path / "..data").mkdir()
        (tmp_path / "..data" / "config.yaml").write_text("policy:\n  max_replicas: 9\n")
        (tmp_path / "config.yaml").symlink_to(tmp_path / "..data" / "config.yaml")
        assert load_config(tmp_path / "config.yaml").policy.max_replicas == 9

    @pytest.mark.parametrize(
        ("content", "line", "what"),
        [
            (b"policy:\n  max_replicas: 9\x00\n", 2, "a NUL byte"),
            (b"\x00", 1, "a NUL byte"),
            (b"a: 1\nb: 2\nc: \x07\n", 3, "the character U+0007"),
        ],
    )
    def test_a_forbidden_character_names_itself_and_its_line(
        self, tmp_path: Path, content: bytes, line: int, what: str
    ):
        """A NUL byte said 'nul.yaml:: invalid YAML': now the line and the character."""
        path = tmp_path / "nul.yaml"
        path.write_bytes(content)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert str(caught.value) == f"{path}: line {line}: invalid YAML: {what} is not allowed in YAML text"

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            (b"\xff\xfe", "consul.token_file: cannot use .*not UTF-8"),
            (b"line one\nline two\n", "consul.token_file: the token holds characters an HTTP header cannot carry"),
            (b"t" * 5000, "consul.token_file: cannot use .*larger than 4096 bytes"),
        ],
        ids=["not-utf8", "two-lines", "huge"],
    )
    def test_an_unusable_token_file(self, tmp_path: Path, content: bytes, expected: str):
        """check-config reads the token file as the daemon will, and names what is wrong with it."""
        token = tmp_path / "token"
        token.write_bytes(content)
        path = tmp_path / "c.yaml"
        path.write_text(f"consul:\n  token_file: {token}\n")
        with pytest.raises(ConfigError, match=expected):
            load_config(path)

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
    def test_an_unreadable_token_file(self, tmp_path: Path):
        """A token file the daemon may not read fails check-config, not the first query."""
        token = tmp_path / "token"
        token.write_text("secret\n")
        token.chmod(0)
        path = tmp_path / "c.yaml"
        path.write_text(f"consul:\n  token_file: {token}\n")
        with pytest.raises(ConfigError, match=r"consul\.token_file: cannot read"):
            load_config(path)

    @pytest.mark.skipif(not Path("/proc/self/mem").is_file(), reason="needs Linux /proc")
    def test_a_file_that_fails_to_read(self, tmp_path: Path):
        """A file that exists but fails to read (EIO, even for root) is one clear line."""
        path = tmp_path / "c.yaml"
        path.write_text("consul:\n  token_file: /proc/self/mem\n")
        with pytest.raises(ConfigError, match=r"consul\.token_file: cannot read '/proc/self/mem'"):
            load_config(path)

    def test_a_ca_file_that_is_not_pem(self, tmp_path: Path):
        """consul.ca_file must load as certificates: py-consul builds its TLS context even for http."""
        ca = tmp_path / "ca.pem"
        ca.write_text("not a certificate\n")
        path = tmp_path / "c.yaml"
        path.write_text(f"consul:\n  ca_file: {ca}\n")
        with pytest.raises(ConfigError, match=r"consul\.ca_file: not a PEM CA bundle"):
            load_config(path)


_KEYS = {
    "consul": ["address", "wait", "rate_per_second", "rate_burst", "retry_initial", "max_answer_bytes", "datacenter"],
    "policy": ["min_replicas", "max_replicas", "target_available_ratio", "startup_grace", "scale_up", "mass_change"],
    "http": ["host", "port", "readiness_max_age"],
    "kubernetes": ["namespace", "request_timeout"],
    "leader_election": ["lease_duration", "identity"],
}
_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=2**63, max_value=2**80),
        st.floats(),
        st.text(max_size=20),
        st.sampled_from(["5s", "1e-300", "1e308", "0.0.0.0", "http://127.0.0.1:1 b", "not a host!!", "²", "-1"]),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)
_documents = st.dictionaries(
    st.sampled_from([*_KEYS, "dry_run", "extra"]),
    st.one_of(
        _values,
        st.sampled_from(list(_KEYS.values())).flatmap(
            lambda keys: st.dictionaries(st.sampled_from(keys), _values, max_size=4)
        ),
    ),
    max_size=4,
)


class TestAnyFile:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(_documents)
    def test_any_document_is_a_config_or_one_line(self, tmp_path: Path, document: dict[str, Any]):
        """Any YAML document: a Config, or a ConfigError of one line; nothing else escapes."""
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(document))
        try:
            load_config(path)
        except ConfigError as exc:
            problem = str(exc)
        else:
            problem = ""
        assert "\n" not in problem
        assert len(problem) < 500

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
    def test_any_bytes_are_a_config_or_one_line(self, tmp_path: Path, content: bytes):
        """Any bytes at all, through the command line: exit 0 or 2 with one line, never a traceback."""
        path = tmp_path / "c.yaml"
        path.write_bytes(content)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["check-config", str(path)])
        assert code in {0, 2}
        if code == 2:
            assert len(err.getvalue().strip().splitlines()) == 1


def _special_file(tmp_path: Path, special: str, stack: contextlib.ExitStack) -> Path:
    """A path of the kind asked for: a FIFO or a listening Unix socket made in ``tmp_path``, a device, a directory."""
    if special == "fifo":
        os.mkfifo(tmp_path / "fifo.yaml")
        return tmp_path / "fifo.yaml"
    if special == "socket":
        server = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        server.bind(str(tmp_path / "s.yaml"))
        server.listen()
        return tmp_path / "s.yaml"
    if special == "directory":
        return tmp_path
    return Path(special)
