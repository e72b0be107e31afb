"""Typed dataclass configs: TOML/YAML files, dotted `--set a.b=v` overrides, unknown keys are errors."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from genloom.errors import GenloomError, choices


@dataclass(kw_only=True)
class DataConfig:
    dir: str = ""  # a folder written by `genloom data` (train.bin, val.bin, tokenizer.json, meta.json)
    # When `dir` holds no prepared data yet and `source` is set, training prepares it first, as
    # `genloom data SOURCE --out DIR --tokenizer ... --vocab-size ...` would: one command reproduces a run.
    source: str = ""
    tokenizer: str = "char"
    vocab_size: int = 4096
    val_fraction: float = 0.05
    split_seed: int = 1337
    # Images, text-conditional models: "templates" (class names through a few templates, "a photo of a
    # {label}", ...), or a CSV of `filename,caption` rows for a folder (several rows per image allowed).
    captions: str = ""
    transpose: int = 3  # music: training pieces also seen shifted -N..+N semitones (validation never)
    # Language models: train on the tokens the data marks as targets only ({split}.mask.bin, written by example
    # sources such as chatterbot-grounded: the replies), each window starting at an example ({split}.starts.bin);
    # the prompt is context, not a target. Off: every token is a target (plain text).
    loss_mask: bool = False


@dataclass(kw_only=True)
class TrainConfig:
    out_dir: str = "runs/default"
    seed: int = 1337
    batch_size: int = 32
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 1000
    max_minutes: float = 0.0  # wall-time budget; 0 means none (the run stops at max_steps)
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    lr_schedule: str = "cosine"  # cosine | constant
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping
    dtype: str = "float32"  # float32 | bfloat16 | float16 (GPU, with a gradient scaler) | auto (what fits the device)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps (`genloom train --device`); auto: a GPU when there is one
    # Under torchrun: "ddp" keeps a whole model on every rank and averages gradients; "fsdp" shards the
    # parameters, gradients and optimizer state over the ranks (torch's fully_shard, FSDP2).
    parallel: str = "ddp"
    compile: bool = False  # torch.compile the model's forward for training steps (compile time in metrics.jsonl)
    eval_interval: int = 200
    eval_batches: int = 20
    log_interval: int = 10
    ckpt_interval: int = 200
    sample_interval: int = 0  # 0: samples only at the end
    threads: int = 0  # 0: torch's default
    init_from: str = ""  # a model folder or checkpoint to fine-tune from
    # Extra evaluation on a schedule (the EvalMetrics callback, the same functions as `genloom eval`); the
    # figures land in metrics.jsonl. gpt: perplexity, distinct, repetition; classifier: accuracy.
    metrics: list = field(default_factory=list)
    metrics_interval: int = 0  # steps between metric evaluations; 0: at every validation


@dataclass(kw_only=True)
class RunConfig:
    family: str = "gpt"
    model: dict = field(default_factory=dict)  # checked against the family's own config class
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp, key: str):
    """Check (and gently convert) one config value against its declared type."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp in (dict, list) or origin in (dict, list):
        if isinstance(value, origin or tp):
            return value
    else:
        return value
    raise GenloomError(f"config key '{key}' must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass `cls` from a dict; unknown keys and wrong types are errors naming the valid keys."""
    if not isinstance(data, dict):
        raise GenloomError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f" in [{prefix.rstrip('.')}]" if prefix else ""
        raise GenloomError(f"unknown config key '{prefix}{unknown[0]}'; valid keys{where}: {choices(fields)}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(value, tp, prefix + name)
    return cls(**kwargs)


def parse_value(text: str):
    """Parse the right side of `--set key=value` as a TOML value, falling back to a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply dotted `a.b=v` overrides to a nested dict (validation happens in from_dict)."""
    for item in overrides:
        if "=" not in item:
            raise GenloomError(f"--set expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise GenloomError(f"config key '{key}' is not a section")
        node[parts[-1]] = parse_value(text.strip())
    return data


def read_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise GenloomError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text) or {}
        if path.suffix == ".json":
            return json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parser error is the user's file
        raise GenloomError(f"cannot parse config {path}: {str(e).splitlines()[0]}") from None
    raise GenloomError(f"unknown config format '{path.suffix}'; choose one of .json, .toml, .yaml")


def load_run_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a run config file, apply overrides, check every key (the family's model keys are checked by
    genloom.families.load_run_config, which the CLI and the worker call)."""
    data = read_file(path) if path else {}
    data = apply_overrides(data, list(overrides))
    return check(from_dict(RunConfig, data))


def check(cfg: RunConfig) -> RunConfig:
    """The checks a key's type cannot express (the family's model keys: genloom.families.check_run_config)."""
    if cfg.train.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise GenloomError(f"unknown train.dtype '{cfg.train.dtype}'; choose one of auto, bfloat16, float16, float32")
    if cfg.train.parallel not in ("ddp", "fsdp"):
        raise GenloomError(f"unknown train.parallel '{cfg.train.parallel}'; choose one of ddp, fsdp")
    if cfg.train.lr_schedule not in ("cosine", "constant"):
        raise GenloomError(f"unknown train.lr_schedule '{cfg.train.lr_schedule}'; choose one of constant, cosine")
    return cfg
