"""Loading ``params.yaml`` (plus ``-S key=value`` overrides) into validated dataclasses."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml

from gans.config import (AugmentConfig, ConfigError, DataConfig, EvaluateConfig, ModelConfig, TrainConfig,
                         build_config, require, require_seed, to_dict)
from gans.data import SUPERRES_PREFIX, DataError, check_source, source_layout
from gans.families import PRESETS, Resolved, check_layout, resolve


@dataclass(frozen=True, kw_only=True)
class RegisterConfig:
    """``register``: the registered model name and when ``champion`` moves."""

    model_name: str = "gan-generator"
    promote: Literal["if_better", "always", "never"] = "if_better"
    # ONNX (or TorchScript) files in every version, checked against PyTorch; false registers a few seconds
    # faster (large sweeps) and the version carries generator.pt alone (`gans export` makes them later).
    exports: bool = True

    def validate(self, where: str) -> None:
        require(bool(self.model_name.strip()), f"{where}.model_name", "must not be empty")


KEEP_CREDENTIALS_OUT = ("keep credentials out of params: use MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                        "(or MLFLOW_TRACKING_TOKEN) for an MLflow server, PGPASSWORD or ~/.pgpass for PostgreSQL")
# Query keys that carry credentials: passwords, tokens, API and access keys, signatures (S3, Azure SAS).
# Paths to key files (PostgreSQL's sslkey, sslcert, sslrootcert) are not secrets themselves.
SECRET_QUERY_KEY = re.compile(r"pass|pwd|token|secret|signature|credential|auth|^sig$|^key$|api[-_]?key|"
                              r"access[-_]?key|private[-_]?key", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    """``tracking``: the MLflow store (a relative sqlite path resolves against the project root)."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = "gans"
    system_metrics_every: float = 10.0  # seconds between CPU/memory/GPU samples of a training run; 0: off

    def validate(self, where: str) -> None:
        require(bool(self.uri.strip()), f"{where}.uri", "must not be empty")
        require(self.system_metrics_every == 0 or 0.5 <= self.system_metrics_every <= 3600,
                f"{where}.system_metrics_every", f"got {self.system_metrics_every}; expected 0 (off) or 0.5..3600 seconds")
        from urllib.parse import parse_qsl, urlsplit

        try:
            parts = urlsplit(self.uri)
            password = parts.password
        except ValueError as err:
            raise ConfigError(f"{where}.uri: not a valid URI ({err})") from None
        require(password is None, f"{where}.uri", f"holds a password; {KEEP_CREDENTIALS_OUT}")
        # A secret in the query string (?token=..., a PostgreSQL ?password=...) is refused like one in the
        # netloc, not redacted where it is printed: params.yaml is committed to git, recorded in dvc.lock
        # and logged to MLflow as an artifact (params.yaml, params.resolved.yaml), so no redaction at print
        # sites could keep it private. The error names the key, never the value.
        secrets = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True) + parse_qsl(parts.fragment)
                   if SECRET_QUERY_KEY.search(k)]
        require(not secrets, f"{where}.uri", f"holds a secret in its query string ({', '.join(secrets)}=...); "
                f"{KEEP_CREDENTIALS_OUT}")
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
class ExploreConfig:
    """``explore``: the latent directions, interpolation grids and inversions of a noise-to-image generator
    (other families have no latent: the stage records that it skipped them)."""

    directions: int = 5        # per method (SeFa, PCA, and the random baseline)
    alpha: float = 3.0         # the step whose effect is measured
    probes: int = 64           # latents the effects are averaged over
    invert: int = 64           # holdout images inverted (0: none)
    invert_steps: int = 200    # gradient steps on z per inversion
    encoder_steps: int = 500   # training steps of the encoder that starts each inversion (and serving's)
    learned_steps: int = 1000  # training steps of the learned directions and their reconstructor (0: none)
    seed: int = 0

    def validate(self, where: str) -> None:
        require(1 <= self.directions <= 512, f"{where}.directions", f"got {self.directions}; expected 1..512")
        require(0 < self.alpha <= 10, f"{where}.alpha", f"got {self.alpha}; expected a step in (0, 10]")
        require(1 <= self.probes <= 4096, f"{where}.probes", f"got {self.probes}; expected 1..4096")
        require(0 <= self.invert <= 4096, f"{where}.invert", f"got {self.invert}; expected 0..4096")
        for key in ("invert_steps", "encoder_steps", "learned_steps"):
            value = getattr(self, key)
            require(0 <= value <= 100_000, f"{where}.{key}", f"got {value}; expected 0..100000")
        require_seed(self.seed, f"{where}.seed")


@dataclass(frozen=True, kw_only=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def validate(self, where: str) -> None:
        try:
            check_source(self.data.source)
        except DataError as err:
            raise ConfigError(str(err)) from None
        if self.data.source.startswith(SUPERRES_PREFIX) and not self.data.scale:
            raise ConfigError(f"data.scale: {self.data.source!r} holds low- and high-resolution pairs; set data.scale "
                              "to the factor between them (2, 4 or 8)")
        if self.data.scale and source_layout(self.data.source) in ("paired", "unpaired", "attributes"):
            raise ConfigError(f"data.scale: super-resolution pairs are made from one image set, and data.source "
                              f"{self.data.source!r} is several domains; use an image source (mnist5k, folder:PATH, ...) "
                              "or superres:PATH, or set data.scale: 0")
        check_layout(self.resolved, source_layout(self.data.source, self.data.scale), self.data.source)
        if self.data.labels_per_class and not getattr(self.resolved.family, "partial_labels", False):
            semi = ", ".join(p for p, f in PRESETS.items() if getattr(f, "partial_labels", False))
            raise ConfigError(f"data.labels_per_class: {self.data.labels_per_class} keeps only some training labels, "
                              f"and only the semi-supervised variants learn from a labelled subset ({semi}); choose "
                              f"one with model.variant, or set data.labels_per_class: 0 (every label)")

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
    raw = read_params_file(p)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{p}: expected a mapping of sections at the top level")
    return params_from_dict(apply_overrides(dict(raw), overrides))


def read_params_file(p: Path) -> Any:
    """The parsed YAML of ``p`` ({} when empty); a missing, unreadable or non-UTF-8 file, invalid YAML and
    duplicate keys raise ConfigError naming the file (and the line)."""
    if p.is_dir():
        raise ConfigError(f"params file {str(p)!r} is a folder, not a file (pass --params FILE)")
    if not p.exists():
        raise ConfigError(f"params file {str(p)!r} not found (run from the project folder or pass --params)")
    try:
        data = p.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read params file {str(p)!r} ({err.strerror or type(err).__name__})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(f"{p}: not UTF-8 text (byte 0x{data[err.start]:02x} at line {line}); "
                          "save it as UTF-8") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _refuse_duplicate_keys(p, node)
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or getattr(err, "reason", None) or "parse error"
        raise ConfigError(f"{p}: not valid YAML ({problem}{where})") from None
    except RecursionError:
        raise ConfigError(f"{p}: not valid YAML (nested too deeply)") from None


def _refuse_duplicate_keys(p: Path, root: yaml.Node | None) -> None:
    """PyYAML keeps the last of two equal keys without a word (and DVC refuses such a file): name the key
    and both lines instead."""
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:  # aliases share nodes; recursive anchors would loop
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                here = f"{path}.{name}" if path else str(name)
                if name is not None and name != "<<":
                    line = key.start_mark.line + 1
                    if (key.tag, name) in lines:
                        first = lines[(key.tag, name)]
                        at = f"line {line}" if first == line else f"lines {first} and {line}"
                        raise ConfigError(f"{p}: duplicate key {here} ({at}); keep one (PyYAML would keep the "
                                          "last without a word, and DVC refuses the file)")
                    lines[(key.tag, name)] = line
                stack.append((value, here))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))


def params_from_dict(raw: Mapping[str, Any]) -> Params:
    return build_config(Params, raw, "")


# ---------------------------------------------------------------- what earlier stages' outputs were made with

PREPARE_RECORD = "params.json"  # beside data/prepared/meta.json: the data.* params the prepare stage ran with


def record_prepare_params(params: Params) -> None:
    """Write data/prepared/params.json: every ``data`` key the prepare stage ran with, tied to the content
    hash of its meta.json (meta.json itself keeps only the source and resolution)."""
    import json

    from gans.io import save_json
    from pipeline import paths

    meta = json.loads((paths.PREPARED / "meta.json").read_text())
    save_json({"hash": meta["hash"], "data": to_dict(params.data)}, paths.PREPARED / PREPARE_RECORD)


class Record(NamedTuple):
    """What an earlier stage's outputs say about the params that made them."""

    where: str  # the output, for messages
    section: str  # the params section it records
    keys: tuple[str, ...]  # the keys of that section it records ("" for all)
    values: dict[str, Any] | None  # None: the output cannot be parsed (the stage that reads it says so)


def recorded_params() -> dict[str, Record]:
    """The records of the stages whose outputs say which params made them, by stage: prepare (data.*:
    meta.json's source and resolution, and every key of params.json when it describes the same data),
    augment (augment.*: spec.json, which the trainer reads) and train (model.variant: metrics/train.json).
    Stages that have not run are left out."""
    import json

    from pipeline import paths
    from pipeline.files import StageError, read_json

    def read(path: Path, stage: str) -> dict[str, Any] | None:
        try:
            value = read_json(path, stage)
        except (OSError, ValueError, StageError):
            return None
        return value if isinstance(value, dict) else None

    out: dict[str, Record] = {}
    if (paths.PREPARED / "meta.json").is_file():
        data = meta = read(paths.PREPARED / "meta.json", "prepare")
        if meta is not None:
            data = {k: meta[k] for k in ("source", "resolution") if k in meta}
            try:
                record = json.loads((paths.PREPARED / PREPARE_RECORD).read_text())
            except (OSError, ValueError):
                record = None
            same = isinstance(record, dict) and record.get("hash") == meta.get("hash")
            if same and isinstance(record.get("data"), dict):
                data.update(record["data"])
        out["prepare"] = Record(str(paths.PREPARED) + "/", "data", ("",), data)
    if (paths.AUGMENTED / "spec.json").is_file():
        out["augment"] = Record(str(paths.AUGMENTED / "spec.json"), "augment", ("",),
                                read(paths.AUGMENTED / "spec.json", "augment"))
    if paths.TRAIN_METRICS.is_file():
        train = read(paths.TRAIN_METRICS, "train")
        variant = None if train is None else {k: train[k] for k in ("variant",) if k in train}
        out["train"] = Record(str(paths.TRAIN_METRICS), "model", ("variant",), variant)
    return out
