"""The README's main job: corpus -> MDLM + AR energy + judge -> test BPC, samples, MDLM vs EDLM table + plot.

    edlm demo [--out out/demo] [--minutes 3] [--quick] [--device D]

Each model trains for ``--minutes`` of wall-clock (``--quick``: the char-tiny preset for a few seconds, a smoke
test). Re-running continues from the checkpoints already in ``--out``. Training, evaluation, sampling and the
quality sweep all run on ``--device`` (default: CUDA when present).
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def run_demo(out: Path, minutes: float, quick: bool, device: str | None = None) -> int:
    from edlm.bench import quality
    from edlm.checkpoint import latest_valid_checkpoint, load_model
    from edlm.config import resolve_train_config
    from edlm.sampling.config import SampleConfig
    from edlm.data import DataError, eval_chunks, load_meta, load_split, prepare_corpus
    from edlm.device import resolve_device
    from edlm.diffusion.schedule import schedule_for
    from edlm.likelihood.nelbo import mdlm_nelbo_per_sequence, summarize
    from edlm.sampling.generate import generate
    from edlm.training.loop import train

    started = time.perf_counter()
    device = resolve_device(device)  # a bad --device fails here, before any work
    data = out / "data"
    try:
        load_meta(data)
    except DataError:
        print(f"[1/5] preparing the embedded Shakespeare corpus in {data}")
        prepare_corpus("shakespeare", data)
    preset = "char-tiny" if quick else "char-small"
    budget = 0.15 if quick else minutes
    models = {"mdlm": ("mdlm", []), "ar": ("ar", []), "judge": ("ar", ["train.seed=1"])}
    for index, (name, (kind, overrides)) in enumerate(models.items(), start=2):
        run = out / name
        config = resolve_train_config(preset, kind, overrides + (["train.max_steps=40"] if quick else []))
        print(f"[{index}/5] training {name} ({preset}, {kind}) for up to {budget:g} minutes -> {run}")
        resume = latest_valid_checkpoint(run) is not None
        if resume and json.loads((run / "config.json").read_text())["train"]["max_steps"] <= \
                latest_valid_checkpoint(run, with_optimizer=False).step:
            print("      already trained; reusing it")
            continue
        train(config, data, run, resume=resume, max_minutes=budget, device=str(device))

    config, mdlm = load_model(out / "mdlm", device=device)
    chunks = eval_chunks(load_split(data, "test"), config.model.seq_len)[: 64 if quick else 512]
    test = summarize(mdlm_nelbo_per_sequence(mdlm, chunks, schedule_for(config),
                                             config.model.mask_id, t_samples=2), config.model.seq_len)
    print(f"\nMDLM test NELBO: {test['bpc']:.4f} ± {test['stderr_bpc']:.4f} bpc "
          f"({test['tokens']:,} test characters)")
    L = config.model.seq_len
    texts, result = generate(mdlm, config, SampleConfig(num=3, steps=L, seed=0))
    print(f"\nMDLM samples (T = {L} steps, {result.nfe} network calls):")
    for text in texts:
        print(f"  {text}")
    # T = L/8 and L/4, where many tokens are revealed per step and EDLM has the most to correct; T = L with the
    # energy at every step alone took over half of a 26-minute demo, so the README's longer runs cover it
    steps = ",".join(str(s) for s in (L // 8, L // 4))
    print("\n[5/5] MDLM vs EDLM-AR (judge: a separately trained AR model)")
    quality.main(["--mdlm", str(out / "mdlm"), "--ar", str(out / "ar"), "--judge", f"run:{out / 'judge'}",
                  "--steps", steps, "--num", "4" if quick else "8", "--precision", "bf16",
                  "--methods", "mdlm,edlm-ar-full-k2-w1.0,edlm-ar-coar-k2-w0.2", "--out", str(out / "quality"),
                  "--device", str(device)])
    print(f"\ndemo finished in {(time.perf_counter() - started) / 60:.1f} minutes; "
          f"plot: {out / 'quality' / 'quality.png'}")
    return 0
