"""Configuration: defaults, durations, the documented example, and one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bolina_scaler.config import ConfigError, ConsulConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent


class TestDefaults:
    def test_empty_file_is_a_valid_config(self):
        """Every key is optional: an empty document gives the documented defaults."""
        config = parse_config(None)
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
        ],
    )
    def test_one_line_naming_the_key(self, data, expected):
        """Each invalid value fails with a single line that starts with the offending key."""
        with pytest.raises(ConfigError) as caught:
            parse_config(data)
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(expected), message

    def test_not_a_mapping(self):
        """A YAML document that is not a mapping is rejected at the root."""
        with pytest.raises(ConfigError, match=r"^<root>: expected a mapping"):
            parse_config([1, 2])

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
