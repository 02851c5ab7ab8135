"""The daemon's configuration: a YAML file (mounted from a ConfigMap), validated by pydantic.

Every invalid value produces a ``ConfigError`` whose message is one line naming the key, e.g.
``policy.max_replicas: must be >= policy.min_replicas (3), got 2``; a file that cannot be read
or parsed is one too (exit 2), never a traceback. Modules, lower layers first:

* ``errors``: ``ConfigError`` and the one-line message of a pydantic error (pure);
* ``checks``: durations (``Duration``, ``PositiveDuration``), host names and Consul addresses
  (pure);
* ``files``: a small UTF-8 text file read, never past its limit (does I/O);
* ``section``: the base of every section model and ``MAX_REPLICAS`` (pure);
* ``steps``: the step limits of both directions, the HPA's behavior rules (pure);
* ``schema``: one model per section, their ranges and rules, ``Config`` (pure apart from
  defaults read from the environment and ``ConsulConfig.token()`` reading the token file);
* ``loading``: ``load_config`` (the YAML file and the files it names: does I/O) and
  ``parse_config`` (data already read, validated).

It imports nothing else of the package: every other part reads its section from here.
"""

from bolina_scaler.config.checks import Duration, PositiveDuration
from bolina_scaler.config.errors import ConfigError, one_line
from bolina_scaler.config.files import TOKEN_FILE_BYTES, read_small_text
from bolina_scaler.config.loading import load_config, parse_config, read_yaml
from bolina_scaler.config.schema import (
    DEFAULT_CONSUL_ADDRESS,
    Config,
    ConsulConfig,
    DemandConfig,
    EventsConfig,
    FallbackConfig,
    KubernetesConfig,
    LeaderElectionConfig,
    MassChangeConfig,
    PolicyConfig,
    ScaleDownConfig,
    ScaleUpConfig,
    StatusConfig,
    StepRule,
    answer_limit,
)

__all__ = [
    "DEFAULT_CONSUL_ADDRESS",
    "TOKEN_FILE_BYTES",
    "Config",
    "ConfigError",
    "ConsulConfig",
    "DemandConfig",
    "Duration",
    "EventsConfig",
    "FallbackConfig",
    "KubernetesConfig",
    "LeaderElectionConfig",
    "MassChangeConfig",
    "PolicyConfig",
    "PositiveDuration",
    "ScaleDownConfig",
    "ScaleUpConfig",
    "StatusConfig",
    "StepRule",
    "answer_limit",
    "load_config",
    "one_line",
    "parse_config",
    "read_small_text",
    "read_yaml",
]
