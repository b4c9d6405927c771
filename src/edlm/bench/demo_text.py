"""The demo's text part (``bench.demo``): Shakespeare through a byte-level BPE, MDLM against the paper's EDLM and
reveal-set EDLM at T = L/4, judged by a separately trained AR model, and the test likelihoods."""

from __future__ import annotations

import time
from pathlib import Path

from edlm.bench.demo_html import TEXT_LABELS

TARGETS = {"mdlm": None, "row": "row", "reveal": "reveal"}  # method -> SampleConfig.is_target (None: no energy)


def _prepare(data: Path, tokenizer: str) -> None:
    from edlm.data import DataError, load_meta, prepare_corpus

    try:
        load_meta(data)
    except DataError:
        prepare_corpus("shakespeare", data, tokenizer=tokenizer, progress=False)


def _sample(model, config, tokenizer, energy, method: str, steps: int, plan) -> dict:
    """``plan.text_num`` samples with one method -> texts, token ids, seconds per sample, costs."""
    from edlm.sampling import SampleConfig
    from edlm.sampling.generate import generate

    target = TARGETS[method]
    sample = SampleConfig(num=plan.text_num, steps=steps, seed=0, batch_size=max(1, plan.text_num // 2),
                          k=plan.k if target else 1, window=1.0, is_target=target or "row", fills=1)
    started = time.perf_counter()
    texts, result = generate(model, config, sample, energy if target else None, tokenizer=tokenizer)
    return {"texts": texts, "token_ids": result.tokens.tolist(), "costs": result.costs(),
            "seconds_per_sample": (time.perf_counter() - started) / plan.text_num}


def likelihoods(config, mdlm, ar, data: Path, quick: bool) -> dict:
    """Test bits per character of the MDLM (its NELBO, an upper bound) and of the AR energy (exact NLL)."""
    from edlm.data import eval_chunks, load_split
    from edlm.data.splits import chars_per_token
    from edlm.diffusion.schedule import schedule_for
    from edlm.likelihood.nelbo import ar_nll_per_sequence, mdlm_nelbo_per_sequence, summarize

    chunks = eval_chunks(load_split(data, "test"), config.model.seq_len)[: 16 if quick else 96]
    per_char = chars_per_token(data, "test")
    nelbo = mdlm_nelbo_per_sequence(mdlm, chunks, schedule_for(config), config.model.mask_id, t_samples=2)
    ar_nll = ar_nll_per_sequence(ar, chunks, config.model.mask_id)
    return {"sequences": int(chunks.shape[0]), "chars_per_token": per_char,
            "mdlm_nelbo": summarize(nelbo, config.model.seq_len, per_char),
            "ar_nll": summarize(ar_nll, config.model.seq_len, per_char)}


def text_part(out: Path, plan, device) -> dict:
    from edlm.bench.demo_train import train_model
    from edlm.checkpoint import load_model, load_run_tokenizer
    from edlm.energy.ar import AREnergy
    from edlm.evaluation.generation import generation_metrics
    from edlm.evaluation.judges import make_judge
    from edlm.stats import SampleScores, paired_difference, verdict

    data = out / "data"
    _prepare(data, plan.text_tokenizer)
    models = [train_model("text MDLM", "mdlm", data, out / "mdlm", plan.text_mdlm, plan.seconds["text-mdlm"], plan,
                          device),
              train_model("text AR energy", "ar", data, out / "ar", plan.text_ar, plan.seconds["text-ar"], plan,
                          device),
              train_model("text AR judge", "ar", data, out / "judge", plan.text_ar + ["train.seed=1"],
                          plan.seconds["text-judge"], plan, device)]
    config, mdlm = load_model(out / "mdlm", device=device)
    _, ar = load_model(out / "ar", device=device)
    tokenizer = load_run_tokenizer(out / "mdlm", config)
    energy = AREnergy(ar, config.model.mask_id, "full")
    judge = make_judge(f"run:{out / 'judge'}", device)
    steps = config.model.seq_len // 4
    rows = {}
    for method in TARGETS:
        rows[method] = _sample(mdlm, config, tokenizer, energy, method, steps, plan)
        rows[method]["metrics"] = generation_metrics(rows[method]["texts"], judge, num_resamples=2000)
        print(f"      T = {steps}  {TEXT_LABELS[method]:40s} judge "
              f"{rows[method]['metrics']['judge_bpc']:.3f} bits per character", flush=True)
    scores = {method: SampleScores.from_metrics(row["metrics"]) for method, row in rows.items()}
    comparisons = []
    for method, against in (("row", "mdlm"), ("reveal", "mdlm"), ("reveal", "row")):
        interval = paired_difference(scores[against], scores[method], "judge_bpc", True, 2000, 0)
        entropy = paired_difference(scores[against], scores[method], "entropy_bits", True, 2000, 0)
        comparisons.append({"method": method, "against": against, **interval.as_dict(),
                            "verdict": verdict(interval), "entropy": entropy.as_dict(),
                            "entropy_verdict": verdict(entropy)})
    return {"models": models, "steps": steps, "length": config.model.seq_len, "tokenizer": tokenizer.name,
            "rows": rows, "comparisons": comparisons, "judge": judge.name,
            "likelihood": likelihoods(config, mdlm, ar, data, plan.max_steps is not None)}
