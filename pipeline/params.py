"""Loading ``params.yaml`` (plus ``-S key=value`` overrides) into validated dataclasses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml

from gans.config import (AugmentConfig, ConfigError, DataConfig, EvaluateConfig, ModelConfig, TrainConfig,
                         build_config, require, to_dict)
from gans.data import DataError, check_source, source_layout
from gans.families import Resolved, check_layout, resolve


@dataclass(frozen=True, kw_only=True)
class RegisterConfig:
    """``register``: the registered model name and when ``champion`` moves."""

    model_name: str = "gan-generator"
    promote: Literal["if_better", "always", "never"] = "if_better"

    def validate(self, where: str) -> None:
        require(bool(self.model_name.strip()), f"{where}.model_name", "must not be empty")


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    """``tracking``: the MLflow store (a relative sqlite path resolves against the project root)."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = "gans"

    def validate(self, where: str) -> None:
        require(bool(self.uri.strip()), f"{where}.uri", "must not be empty")
        from urllib.parse import urlsplit

        require(urlsplit(self.uri).password is None, f"{where}.uri",
                "holds a password; keep credentials out of params: use MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD for an MLflow server, PGPASSWORD or ~/.pgpass for PostgreSQL")
        require(bool(self.experiment.strip()), f"{where}.experiment", "must not be empty")


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """``serve``: the model server started by ``gans serve``."""

    host: str = "127.0.0.1"
    port: int = 5001
    max_rows: int = 64

    def validate(self, where: str) -> None:
        require(1 <= self.port <= 65535, f"{where}.port", f"got {self.port}; expected 1..65535")
        require(1 <= self.max_rows <= 4096, f"{where}.max_rows", f"got {self.max_rows}; expected 1..4096")


@dataclass(frozen=True, kw_only=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def validate(self, where: str) -> None:
        try:
            check_source(self.data.source)
        except DataError as err:
            raise ConfigError(str(err)) from None
        check_layout(self.resolved, source_layout(self.data.source), self.data.source)

    @cached_property
    def resolved(self) -> Resolved:
        """``model.variant`` resolved once: its family and checked composition."""
        return resolve(self.model)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def flat(self) -> dict[str, str]:
        """Every key as ``section.key`` -> string, for MLflow params."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                out[prefix] = str(value)

        walk("", self.to_dict())
        return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.steps=10'`` -> (['train', 'steps'], 10); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"-S {text!r}: expected KEY=VALUE, for example -S train.steps=100")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"-S {text!r}: the value is not valid YAML ({err.problem})") from None
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key.path=value`` set (sections created as needed)."""
    import copy

    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"-S {text!r}: {'.'.join(path[: i + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return out


def load_params(path: str | Path = "params.yaml", overrides: Sequence[str] = ()) -> Params:
    """Read, override and validate; any problem raises ConfigError naming the key."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"params file {str(p)!r} not found (run from the project folder or pass --params)")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML ({getattr(err, 'problem', None) or 'parse error'}{where})") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{p}: expected a mapping of sections at the top level")
    return params_from_dict(apply_overrides(dict(raw), overrides))


def params_from_dict(raw: Mapping[str, Any]) -> Params:
    return build_config(Params, raw, "")
