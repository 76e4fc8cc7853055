"""Training config as data: ``configs/base.toml`` overridden by a preset and ``--set`` pairs.

A config is a nested dict of plain values (see ``configs/base.toml`` for every key).
Presets may only use keys of the base; ``--set a.b=value`` values are typed by the base value.
"""
import copy
import pathlib
import tomllib

CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"
STAGES = ("ce", "arcface")
HEADS = ("softmax", "arcface", "cosface", "combined")
_CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "calibration": ("best", "cv-median"),
    "data.protocol": ("view1", "view2", "folder"),
    "ce.head": HEADS, "arcface.head": HEADS,
    "ce.optimizer": ("sgd", "adamw"), "arcface.optimizer": ("sgd", "adamw"),
}


def preset_names():
    """Presets shipped in ``configs/`` (without ``.toml``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def _read_toml(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path}: {exc}") from None


def flat_keys(cfg, prefix=""):
    """Dotted keys of a nested dict: ``{"a": {"b": 1}} -> ["a.b"]``."""
    keys = []
    for k, v in cfg.items():
        keys += flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]
    return keys


def _typed(value, base, key):
    """``value`` converted to the type of ``base`` (ints are accepted for floats)."""
    if isinstance(base, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ValueError(f"{key}: expected a bool, got {value!r}")
    if isinstance(base, (int, float)):  # bool is handled above
        kind = type(base)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or isinstance(value, int)):
            return kind(value)
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
        raise ValueError(f"{key}: expected {'an int' if kind is int else 'a float'}, got {value!r}")
    if isinstance(base, str):
        if isinstance(value, str):
            return value
        raise ValueError(f"{key}: expected a string, got {value!r}")
    raise ValueError(f"{key}: unsupported config value type {type(base).__name__}")


def _set(cfg, base, key, value):
    parts = key.split(".")
    node, bnode = cfg, base
    for p in parts[:-1]:
        if not isinstance(bnode.get(p), dict):
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(flat_keys(base))}")
        node, bnode = node[p], bnode[p]
    last = parts[-1]
    if last not in bnode or isinstance(bnode[last], dict):
        raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(flat_keys(base))}")
    node[last] = _typed(value, bnode[last], key)


def _merge(cfg, base, over, prefix=""):
    """Apply the nested dict ``over`` onto ``cfg`` (both rooted at the top level)."""
    for k, v in over.items():
        if isinstance(v, dict):
            _merge(cfg, base, v, prefix + k + ".")
        else:
            _set(cfg, base, prefix + k, v)


def parse_set(items):
    """``["a.b=1", ...] -> [("a.b", "1"), ...]``; raises ValueError on a missing ``=``."""
    pairs = []
    for item in items or []:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        pairs.append((k.strip(), v.strip()))
    return pairs


def validate(cfg):
    """Raise ValueError for impossible combinations; returns ``cfg``."""
    for key, choices in _CHOICES.items():
        node = cfg
        for p in key.split("."):
            node = node[p]
        if node not in choices:
            raise ValueError(f"{key} must be one of {list(choices)}, got {node!r}")
    for stage in STAGES:
        st = cfg[stage]
        if st["head"] != "softmax" and (st["cutmix"] > 0 or st["mixup"] > 0):
            raise ValueError(
                f"{stage}: CutMix/MixUp (cutmix={st['cutmix']}, mixup={st['mixup']}) need the softmax head, "
                f"got head={st['head']!r}: a margin head adds its margin to one hard target class, "
                "which is undefined for mixed (soft) targets")
        for k in ("epochs", "batch_size"):
            if st[k] < (0 if k == "epochs" else 1):
                raise ValueError(f"{stage}.{k} must be >= {0 if k == 'epochs' else 1}, got {st[k]}")
        if st["lr"] <= 0:
            raise ValueError(f"{stage}.lr must be > 0, got {st['lr']}")
    if not any(cfg[s]["enabled"] and cfg[s]["epochs"] > 0 for s in STAGES):
        raise ValueError("both stages are disabled (ce.enabled / arcface.enabled); enable at least one")
    if not 0 <= cfg["budget_minutes"] < float("inf"):
        raise ValueError(f"budget_minutes must be >= 0 (0 = no budget), got {cfg['budget_minutes']}")
    if not 1 <= cfg["data"]["fold"] <= 10:
        raise ValueError(f"data.fold must be in 1..10, got {cfg['data']['fold']}")
    if cfg["data"]["protocol"] == "folder" and not cfg["data"]["root"]:
        raise ValueError("data.protocol = 'folder' needs data.root (a folder of identity folders)")
    if cfg["data"]["size"] < 16:
        raise ValueError(f"data.size must be >= 16, got {cfg['data']['size']}")
    return cfg


def load_config(preset="base", overrides=()):
    """Base config overridden by ``preset`` (a name in ``configs/`` or a .toml path) and ``overrides``.

    ``overrides`` is a list of ``"key=value"`` strings or ``(key, value)`` pairs.
    """
    base = _read_toml(CONFIG_DIR / "base.toml")
    cfg = copy.deepcopy(base)
    if preset and preset != "base":
        path = pathlib.Path(preset)
        if path.suffix != ".toml":
            path = CONFIG_DIR / f"{preset}.toml"
            if not path.is_file():
                raise ValueError(f"unknown preset {preset!r}; expected one of {preset_names()} or a .toml file")
        elif not path.is_file():
            raise ValueError(f"config file not found: {path}")
        _merge(cfg, base, _read_toml(path))
    pairs = [p if isinstance(p, tuple) else parse_set([p])[0] for p in overrides]
    for k, v in pairs:
        _set(cfg, base, k, v)
    return validate(cfg)
