"""Typed, frozen configuration: one dataclass per concern, named presets, dotted overrides.

Every run folder holds ``config.json`` = ``RunConfig`` as JSON, so a checkpoint always says how it was made.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, get_args, get_origin, get_type_hints

from edlm.errors import EdlmError

ModelKind = Literal["mdlm", "ar", "nce"]


class ConfigError(EdlmError, ValueError):
    """A bad preset, override or config file; the message names the offending key."""


def raise_first_error(config, checks: list[tuple[bool, str, str]]) -> None:
    """ConfigError with the first bad Literal field of the flag-level ``config``, else the first failed check
    ``(ok, field, message)``: the error's subject is the field (the command line shows it as its flag:
    ``(k >= 1, "k", "must be >= 1")`` reads ``k must be >= 1`` here and ``--k must be >= 1`` there)."""
    for subject, message in literal_errors(config) + [(field, message) for ok, field, message in checks if not ok]:
        raise ConfigError(message, subject)


def literal_errors(section, prefix: str | None = None) -> list[tuple[str | None, str]]:
    """(subject, message) for each field of the dataclass ``section`` whose value is not among its ``Literal``
    choices (e.g. ``train.precision=fp16``, which would otherwise run silently in fp32). With ``prefix`` the
    message names ``prefix.field=value`` (no subject); without, the subject is the field (a flag's)."""
    hints = get_type_hints(type(section))
    errors = []
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if get_origin(hints[f.name]) is Literal and value not in get_args(hints[f.name]):
            choices = f"expected one of {', '.join(get_args(hints[f.name]))}"
            errors.append((None, f"{prefix}.{f.name}={value!r}: {choices}") if prefix else
                          (f.name, f"{value!r}: {choices}"))
    return errors


@dataclass(frozen=True)
class ModelConfig:
    """Transformer sizes. ``vocab_size`` counts real tokens; the network has ``vocab_size + 1`` rows (mask)."""

    kind: ModelKind = "mdlm"
    vocab_size: int = 27
    seq_len: int = 256
    n_layers: int = 6
    hidden: int = 256
    n_heads: int = 4
    cond_dim: int = 128
    mlp_ratio: int = 4
    time_conditioning: bool = False
    dropout: float = 0.0
    tokenizer: str = "char"  # the data folder's tokenizer name (char, gpt2, bpe:N); checked when data is loaded
    # the log-linear noise schedule's eps (alpha_t = 1 - (1 - eps) t): part of the trained model, so sampling and
    # scoring read it from here (schedule_for); stored as train.schedule_eps by runs before it moved
    schedule_eps: float = 1e-3

    @property
    def mask_id(self) -> int:
        return self.vocab_size


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32  # global batch (sequences per optimiser step, over all ranks and micro-steps)
    grad_accum: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 200
    lr_schedule: Literal["constant", "cosine"] = "constant"
    max_steps: int = 2000
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    precision: Literal["bf16", "fp32"] = "bf16"
    seed: int = 0
    eval_every: int = 500
    eval_batches: int = 8
    ckpt_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    on_nonfinite: Literal["stop", "skip"] = "stop"
    eps_t: float = 1e-3  # lower end of the training-time range t ~ U[eps_t, 1]
    negatives: int = 1  # NCE only: negatives per positive
    nce_window: float = 1.0  # NCE only: draw t in [1 - nce_window, 1]
    # GPU throughput levers (docs/distributed.md, "GPU"); none changes the math of a step.
    compile: bool = False  # torch.compile the model (falls back to eager, with a note, if compiling fails)
    # torch.compile's mode: "reduce-overhead" adds CUDA graphs (fewer kernel launches: helps small models on a
    # GPU), "max-autotune" also searches matmul kernels (long compiles); "default" is neither
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    fused_adamw: bool = True  # fused AdamW kernel on CUDA (ignored on CPU, where the default kernel runs)
    tf32: bool = True  # TF32 tensor cores for fp32 matmuls on CUDA (ignored on CPU)


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "custom"

    def to_json(self) -> str:
        return json.dumps({"preset": self.preset, "model": dataclasses.asdict(self.model),
                           "train": dataclasses.asdict(self.train)}, indent=2)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "RunConfig":
        try:
            model_values, train_values = dict(data["model"]), dict(data["train"])
            if "schedule_eps" in train_values:  # a run from before schedule_eps moved to the model
                model_values.setdefault("schedule_eps", train_values.pop("schedule_eps"))
            model = _build(ModelConfig, model_values, "model")
            train = _build(TrainConfig, train_values, "train")
        except KeyError as error:
            raise ConfigError(f"config is missing the section {error}") from None
        return RunConfig(model=model, train=train, preset=data.get("preset", "custom"))


def _build(cls, values: dict[str, Any], prefix: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown config key {prefix}.{unknown[0]} (valid: {', '.join(sorted(names))})")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**fixed)



@dataclass(frozen=True)
class LikelihoodConfig:
    """Every knob of ``edlm eval``, ``edlm eval --energy`` and ``edlm bench likelihood``, each default written once.

    The EDLM bound is the bound of the sampler ``edlm sample`` runs with the same ``steps``, ``k``, ``window``
    and ``t_min``, at temperature 1, top-p 1 and energy temperature 1 (see ``edlm.likelihood.estimators``).
    """

    split: Literal["val", "test"] = field(default="test", metadata={"help": "data split to evaluate"})
    t_samples: int = field(default=4, metadata={
        "help": "t draws per sequence for the continuous-time MDLM NELBO (its standard error shrinks as "
                "1/sqrt(sequences * t_samples))"})
    max_sequences: int | None = field(default=None, metadata={
        "help": "evaluate only the first N sequences (default: all)"})
    batch_size: int = field(default=16, metadata={"help": "sequences per forward pass"})
    seed: int = field(default=0, metadata={"help": "seed of every random draw (t, masks, proposals, paths)"})
    energy: str = field(default="", metadata={
        "help": "EDLM likelihood with this energy: ar:RUN_DIR or nce:RUN_DIR (empty: the model's own NELBO/NLL)"})
    energy_mode: Literal["coar", "full"] = field(default="coar", metadata={
        "help": "AR energy: coar scores the masked positions only (self-normalised, no log Z), full the "
                "whole sequence (needs log Z)"})
    is_samples: int = field(default=16, metadata={
        "help": "proposals from the denoiser for the Monte-Carlo log Z of the paper's estimator (>= 2)"})
    inner: int = field(default=8, metadata={
        "help": "inner draws N per step of the EDLM bound (the bound tightens as N grows; cost grows as N*k)"})
    steps: int = field(default=32, metadata={
        "help": "T, sampler steps of the discrete-time bounds (the bound is for `edlm sample --steps T "
                "--is-target row`)"})
    k: int = field(default=2, metadata={"help": "importance-sampling candidates per step inside the window"})
    window: float = field(default=0.2, metadata={
        "help": "importance sampling for t >= 1 - window; 0.2 as in `edlm sample`, so that by default the "
                "bound is the default sampler's (1.0: every step)"})
    precision: Literal["fp32", "bf16"] = field(default="fp32", metadata={
        "help": "one precision for every row of a likelihood table (denoiser, energy, AR model)"})
    eps_t: float = field(default=1e-3, metadata={
        "help": "continuous-time NELBO: t ~ U[eps_t, 1] (the same range as training's train.eps_t)"})
    t_min: float = field(default=1e-5, metadata={
        "help": "last time of the sampler's grid 1 = t_0 > ... > t_T = t_min; what is still masked there is "
                "filled greedily (as `edlm sample` does)"})
    min_ess: float = field(default=2.0, metadata={
        "help": "a paper estimate whose mean effective sample size of log Z is below this is reported as "
                "unavailable (ESS ~ 1: one proposal carries all the weight and log Z is biased low)"})

    def __post_init__(self) -> None:
        """Range checks and the Literal fields' choices, once, on construction; raises ``ConfigError`` whose
        subject is the field (the command line shows its flag)."""
        raise_first_error(self, [
            (self.t_samples >= 1, "t_samples", "must be >= 1"),
            (self.max_sequences is None or self.max_sequences >= 1, "max_sequences", "must be >= 1"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.is_samples >= 2, "is_samples", "must be >= 2 (log Z needs at least two proposals)"),
            (self.inner >= 1, "inner", "must be >= 1"),
            (self.steps >= 1, "steps", "must be >= 1"),
            (self.k >= 1, "k", "must be >= 1"),
            (0.0 <= self.window <= 1.0, "window", "must be in [0, 1]"),
            (0.0 < self.eps_t < 1.0, "eps_t", "must be in (0, 1)"),
            (0.0 <= self.t_min < 1.0, "t_min", "must be in [0, 1)"),
            (self.min_ess >= 1.0, "min_ess", "must be >= 1"),
        ])


PRESETS: dict[str, RunConfig] = {
    # Trains in seconds: for tests and smoke runs.
    "char-tiny": RunConfig(
        model=ModelConfig(seq_len=32, n_layers=2, hidden=64, n_heads=4, cond_dim=32),
        train=TrainConfig(batch_size=16, warmup_steps=10, max_steps=100, eval_every=50, ckpt_every=50,
                          eval_batches=2, log_every=5),
        preset="char-tiny"),
    # The CPU workhorse (about 5M parameters).
    "char-small": RunConfig(
        model=ModelConfig(seq_len=256, n_layers=5, hidden=256, n_heads=4, cond_dim=128),
        train=TrainConfig(batch_size=32, lr=1e-3, warmup_steps=100, lr_schedule="cosine", max_steps=900,
                          eval_every=100, ckpt_every=100, eval_batches=8),
        preset="char-small"),
    # The papers' text8 model: 12 layers, 768 hidden, 12 heads, L = 256 (a GPU preset).
    "text8-paper": RunConfig(
        model=ModelConfig(seq_len=256, n_layers=12, hidden=768, n_heads=12, cond_dim=128),
        train=TrainConfig(batch_size=512, warmup_steps=2500, max_steps=1_000_000, eval_every=5000,
                          ckpt_every=5000, eval_batches=32, ema_decay=0.9999, compile=True),
        preset="text8-paper"),
    # A CPU preset for subword text: a byte-level BPE of 4096 tokens trained on the corpus (about 7M parameters).
    "bpe-small": RunConfig(
        model=ModelConfig(vocab_size=4096, tokenizer="bpe:4096", seq_len=256, n_layers=5, hidden=256, n_heads=4,
                          cond_dim=128),
        train=TrainConfig(batch_size=32, lr=1e-3, warmup_steps=100, lr_schedule="cosine", max_steps=900,
                          eval_every=100, ckpt_every=100, eval_batches=8),
        preset="bpe-small"),
    # MDLM's OpenWebText model: GPT-2 BPE (50257 tokens + [MASK]), L = 1024, 12 x 768, 12 heads, the papers'
    # optimiser settings (AdamW 3e-4, 2,500 warm-up steps then constant, EMA 0.9999, global batch 512).
    "owt-paper": RunConfig(
        model=ModelConfig(vocab_size=50257, tokenizer="gpt2", seq_len=1024, n_layers=12, hidden=768, n_heads=12,
                          cond_dim=128),
        train=TrainConfig(batch_size=512, warmup_steps=2500, max_steps=1_000_000, eval_every=5000,
                          ckpt_every=5000, eval_batches=32, ema_decay=0.9999),
        preset="owt-paper"),
}


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (valid: {', '.join(PRESETS)})")
    return PRESETS[name]


def _parse_value(text: str, current: Any, key: str) -> Any:
    try:
        if isinstance(current, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, tuple):
            return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"override {key}={text}: expected a {type(current).__name__}") from None
    return text


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.field=value`` strings, e.g. ``train.lr=1e-3 model.n_layers=4``."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"malformed override {item!r}: expected section.key=value")
        key, text = item.split("=", 1)
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in ("model", "train"):
            raise ConfigError(f"malformed override key {key!r}: expected model.<field> or train.<field>")
        if key == "train.schedule_eps":
            raise ConfigError("train.schedule_eps is now model.schedule_eps (the schedule belongs to the model)")
        section = getattr(config, parts[0])
        names = {f.name for f in dataclasses.fields(section)}
        if parts[1] not in names:
            raise ConfigError(f"unknown config key {key} (valid: {', '.join(sorted(names))})")
        value = _parse_value(text, getattr(section, parts[1]), key)
        config = dataclasses.replace(config, **{parts[0]: dataclasses.replace(section, **{parts[1]: value})})
    validate(config)
    return config


def range_checks(config: RunConfig) -> list[tuple[str, Callable[[], bool], str]]:
    """(field, check, message) for the model and train settings: every numeric field of ModelConfig and
    TrainConfig has one (a test enforces it). Checks are lazy and run in order, so the divisibility checks only
    run once n_heads >= 1 is known."""
    m, t = config.model, config.train
    return [
        ("model.vocab_size", lambda: m.vocab_size >= 2, "model.vocab_size must be >= 2"),
        ("model.seq_len", lambda: m.seq_len >= 2, "model.seq_len must be >= 2"),
        ("model.n_layers", lambda: m.n_layers >= 1, "model.n_layers must be >= 1"),
        ("model.n_heads", lambda: m.n_heads >= 1, "model.n_heads must be >= 1"),
        ("model.hidden", lambda: m.hidden >= 1, "model.hidden must be >= 1"),
        ("model.hidden", lambda: m.hidden % m.n_heads == 0, "model.hidden must be divisible by model.n_heads"),
        ("model.hidden", lambda: (m.hidden // m.n_heads) % 2 == 0,
         "model.hidden / model.n_heads must be even (rotary embeddings)"),
        ("model.cond_dim", lambda: m.cond_dim >= 1, "model.cond_dim must be >= 1"),
        ("model.mlp_ratio", lambda: m.mlp_ratio >= 1, "model.mlp_ratio must be >= 1"),
        ("model.dropout", lambda: 0.0 <= m.dropout < 1.0, "model.dropout must be in [0, 1)"),
        ("model.schedule_eps", lambda: 0.0 < m.schedule_eps < 1.0, "model.schedule_eps must be in (0, 1)"),
        ("train.batch_size", lambda: t.batch_size >= 1, "train.batch_size must be >= 1"),
        ("train.grad_accum", lambda: t.grad_accum >= 1 and t.batch_size % t.grad_accum == 0,
         "train.grad_accum must be >= 1 and divide train.batch_size"),
        ("train.lr", lambda: t.lr > 0, "train.lr must be > 0"),
        ("train.weight_decay", lambda: t.weight_decay >= 0, "train.weight_decay must be >= 0"),
        ("train.betas", lambda: len(t.betas) == 2 and all(0.0 <= b < 1.0 for b in t.betas),
         "train.betas must be two numbers in [0, 1), e.g. train.betas=0.9,0.999"),
        ("train.warmup_steps", lambda: t.warmup_steps >= 0, "train.warmup_steps must be >= 0"),
        ("train.max_steps", lambda: t.max_steps >= 1, "train.max_steps must be >= 1"),
        ("train.grad_clip", lambda: t.grad_clip > 0, "train.grad_clip must be > 0 (it is a norm to clip to)"),
        ("train.ema_decay", lambda: 0.0 <= t.ema_decay < 1.0, "train.ema_decay must be in [0, 1)"),
        ("train.seed", lambda: t.seed >= 0, "train.seed must be >= 0"),
        ("train.eval_every", lambda: t.eval_every >= 1, "train.eval_every must be >= 1"),
        ("train.eval_batches", lambda: t.eval_batches >= 1, "train.eval_batches must be >= 1"),
        ("train.ckpt_every", lambda: t.ckpt_every >= 1, "train.ckpt_every must be >= 1"),
        ("train.keep_checkpoints", lambda: t.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1"),
        ("train.log_every", lambda: t.log_every >= 1, "train.log_every must be >= 1"),
        ("train.eps_t", lambda: 0.0 < t.eps_t < 1.0, "train.eps_t must be in (0, 1)"),
        ("train.negatives", lambda: t.negatives >= 1, "train.negatives must be >= 1"),
        ("train.nce_window", lambda: 0.0 < t.nce_window <= 1.0, "train.nce_window must be in (0, 1]"),
    ]


def validate(config: RunConfig) -> None:
    """The Literal fields' choices, then the range checks, once, at the boundary."""
    for _, message in literal_errors(config.model, "model") + literal_errors(config.train, "train"):
        raise ConfigError(message)
    for _, ok, message in range_checks(config):
        if not ok():
            raise ConfigError(message)


def resolve_train_config(preset: str, model: str, overrides: list[str], max_steps: int | None = None,
                         negatives: int | None = None) -> RunConfig:
    """The run config for ``edlm train``: a named preset, the model kind, then dotted overrides (validated)."""
    if model not in ("mdlm", "ar", "nce"):
        raise ConfigError(f"{model!r}: unknown model (valid: mdlm, ar, nce)", "model")
    config = get_preset(preset)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, kind=model))
    extra = []
    if max_steps is not None:
        extra.append(f"train.max_steps={max_steps}")
    if negatives is not None:
        extra.append(f"train.negatives={negatives}")
    return apply_overrides(config, list(overrides) + extra)
