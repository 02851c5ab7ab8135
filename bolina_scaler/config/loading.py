"""Loading the configuration: the YAML file read and parsed strictly, validated by the schema.

Does I/O: ``read_yaml`` reads the file, ``load_config`` also the files the config names (token,
CA bundle, kubeconfig) as the daemon will read them; ``parse_config`` validates data already read
(pure apart from the schema's defaults reading the environment). Loading refuses what YAML alone
lets through: a key given twice (YAML would keep the last), anything but a regular file (a FIFO
would block), a file larger than 1 MiB or not UTF-8, a character YAML forbids (a NUL byte),
nesting deeper than Python can parse; each is a one-line ``ConfigError`` (exit 2), never a
traceback. An empty document (an empty file, only comments, ``null``, ``---``) is refused too:
that is what a ConfigMap mounted under the wrong key gives, and running on every default would
start a live scaler of Deployment ``bolina``. ``{}`` is the way to say "the defaults", on purpose.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bolina_scaler.config.errors import ConfigError, one_line, short_repr
from bolina_scaler.config.files import TOKEN_FILE_BYTES, read_small_text
from bolina_scaler.config.schema import Config

__all__ = ["MAX_CONFIG_BYTES", "load_config", "parse_config", "read_yaml"]

MAX_CONFIG_BYTES = 1024 * 1024
"""A config file is a few KB; a larger one (or ``/dev/zero``) is not one."""


def parse_config(data: Any) -> Config:
    """Validate already-parsed YAML; raise ``ConfigError`` with a one-line message.

    ``None`` (an empty document) is refused, not read as "every default": ``{}`` says that.
    """
    problem = _root_problem(data)
    if problem is not None:
        raise ConfigError(f"<root>: {problem}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(one_line(exc)) from None
    except RecursionError:
        raise ConfigError("<root>: nested too deeply") from None


EMPTY_DOCUMENT = "the document is empty (a ConfigMap mounted under the wrong key?); write {} to run on the defaults"


def _root_problem(data: Any) -> str | None:
    """Why a parsed document cannot be a config at all (empty, or not a mapping), else None."""
    if data is None:
        return EMPTY_DOCUMENT
    if not isinstance(data, dict):
        return f"expected a mapping of sections (consul:, kubernetes:, policy:, ...), got {_kind(data)}"
    return None


def _kind(value: Any) -> str:
    """What a YAML value is, in the words of its reader: ``a list``, ``a string``."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (YAML 1.2
    says keys are unique; PyYAML keeps the last one, so a second ``policy:`` section silently
    replaced the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # The keys written in this mapping, before merge keys (<<) bring theirs: those may be
        # overridden, that is what they are for.
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # unhashable: the base class names that error
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {short_repr(key, 40)} twice (first on line {first.start_mark.line + 1})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path | str, *, what: str = "config file") -> Any:
    """One YAML document from a file, or ``ConfigError`` (one line naming the file and the problem).

    At most ``MAX_CONFIG_BYTES`` are read; the text must be UTF-8; duplicate keys, nesting deeper
    than the parser's recursion and integers beyond Python's conversion limit are errors.
    """
    path = Path(path)
    try:
        text = read_small_text(path, MAX_CONFIG_BYTES)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    except ValueError as exc:  # not a regular file, too large, not UTF-8, a NUL in the path
        raise ConfigError(f"{path}: cannot read {what}: {exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: plain data only
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (a NUL byte, a control)
        line = text.count("\n", 0, exc.position) + 1
        name = "a NUL byte" if exc.character in (0, "\0") else f"the character {_codepoint(exc.character)}"
        raise ConfigError(f"{path}: line {line}: invalid YAML: {name} is not allowed in YAML text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f": line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(" ".join(f"{path}{where}: {problem}".split())) from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a {what}") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise ConfigError(" ".join(f"{path}: invalid value: {exc}".split())[:300]) from None


def _codepoint(character: int | str) -> str:
    """``U+0007``, for a character that cannot be shown as itself."""
    code = character if isinstance(character, int) else ord(character)
    return f"U+{code:04X}"


def _check_file(key: str, path: Path | None, *, limit: int = MAX_CONFIG_BYTES) -> str | None:
    """The text of a file the config names, or ``ConfigError`` saying why it cannot be used."""
    if path is None:
        return None
    if not path.exists():
        raise ConfigError(f"{key}: no such file {short_repr(str(path))}")
    try:
        return read_small_text(path, limit)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {short_repr(str(path))}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{key}: cannot use {short_repr(str(path))}: {exc}") from None


def load_config(path: Path | str) -> Config:
    """Read and validate a YAML config file; raise ``ConfigError`` naming the problem.

    The files it names are read too, as the daemon will read them: the token file must hold a
    token an HTTP header can carry, the CA file must load as PEM certificates.
    """
    data = read_yaml(path)
    problem = _root_problem(data)
    if problem is not None:  # the file is the thing to fix: name it
        raise ConfigError(f"{path}: {problem}")
    config = parse_config(data)
    consul = config.consul
    token = _check_file("consul.token_file", consul.token_file, limit=TOKEN_FILE_BYTES)
    if token is not None and (not token.strip().isascii() or not token.strip().isprintable()):
        raise ConfigError("consul.token_file: the token holds characters an HTTP header cannot carry")
    if _check_file("consul.ca_file", consul.ca_file) is not None:
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(consul.ca_file))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"consul.ca_file: not a PEM CA bundle: {' '.join(str(exc).split())[:200]}") from None
    _check_file("kubernetes.kubeconfig", config.kubernetes.kubeconfig)
    return config
