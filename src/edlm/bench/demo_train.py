"""Training one of the demo's models (``bench.demo``): a time budget (or a step cap for --quick), reused when the
run folder already holds a checkpoint."""

from __future__ import annotations

from pathlib import Path


def train_model(name: str, kind: str, data: Path, run: Path, overrides: list[str], seconds: float, plan,
                device) -> dict:
    """Train (or reuse) one model under ``plan`` (``demo.Plan``: its step cap); returns its steps, seconds and
    validation bits per character."""
    import csv

    from edlm.checkpoint import latest_valid_checkpoint, save_run_tokenizer
    from edlm.config import resolve_train_config
    from edlm.training.loop import train

    extra = [f"train.max_steps={plan.max_steps}"] if plan.max_steps else ["train.max_steps=100000"]
    config = resolve_train_config("char-small", kind, overrides + extra)
    config = _with_data_vocabulary(config, data)
    if latest_valid_checkpoint(run) is None:
        print(f"      training {name} ({kind}, {config.model.n_layers} x {config.model.hidden}) for "
              f"{seconds:.0f} s", flush=True)
        train(config, data, run, max_minutes=seconds / 60, progress=False, device=str(device))
        save_run_tokenizer(run, data)
    else:
        print(f"      {name}: reusing {run}", flush=True)
    rows = [row for row in csv.DictReader((run / "metrics.csv").open())]
    validated = [row for row in rows if row.get("val_bpc")]
    return {"name": name, "kind": kind, "steps": int(rows[-1]["step"]) if rows else 0,
            "seconds": float(rows[-1]["elapsed_s"]) if rows and rows[-1].get("elapsed_s") else None,
            "val_bpc": float(validated[-1]["val_bpc"]) if validated else None,
            "size": f"{config.model.n_layers} x {config.model.hidden}"}


def _with_data_vocabulary(config, data: Path):
    import dataclasses

    from edlm.data import load_meta

    tokenizer = load_meta(data)["tokenizer"]
    model = dataclasses.replace(config.model, tokenizer=tokenizer["name"], vocab_size=tokenizer["vocab_size"])
    return dataclasses.replace(config, model=model)
