"""Implementations of the CLI subcommands (argument parsing lives in ``cli.py``)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from edlm.errors import EdlmError


class UserError(EdlmError, ValueError):
    """A bad command-line input; the message names the flag or file."""


def user_error(error: BaseException) -> bool:
    """True for errors the user can fix: edlm's own (``EdlmError``) and OS errors on a named path (missing file,
    permission denied, disk full while writing ``--out``). Everything else is a bug and keeps its traceback."""
    if isinstance(error, EdlmError):
        return True
    return isinstance(error, OSError) and getattr(error, "filename", None) is not None


def _check_writable(folder: Path, flag: str, value: str | Path | None = None) -> None:
    """``folder`` (or its nearest existing ancestor) must be a writable folder; ``value`` is what the user typed."""
    from edlm.fileio import unwritable_ancestor

    probe = unwritable_ancestor(folder)
    if probe is not None:
        raise UserError(f"{flag} {value or folder}: not writable ({probe} is not a writable folder)")


@contextlib.contextmanager
def _processes(device: str | None):
    """This process's place in the job (``edlm.parallel.init_from_env``: under torchrun it joins the process
    group), left again at the end whatever happens: commands own the process group, library code never
    starts or ends one."""
    from edlm.parallel import cleanup, init_from_env

    info = init_from_env(device)
    try:
        yield info
    finally:
        cleanup()


def _adapt_to_data(config, data_dir, preset: str, overrides: list[str]):
    """A preset is a model size: the tokenizer and the vocabulary size come from the data folder (a trained
    ``bpe:N`` may end with fewer than N tokens). Returns (config, notes): one note when the preset was tuned for
    another tokenizer. An explicit ``model.tokenizer=`` override that contradicts the data is refused."""
    import dataclasses

    from edlm.data import load_meta

    tokenizer = load_meta(data_dir)["tokenizer"]
    name, vocab_size = tokenizer["name"], tokenizer["vocab_size"]
    if any(item.startswith("model.tokenizer=") for item in overrides) and config.model.tokenizer != name:
        raise UserError(f"model.tokenizer={config.model.tokenizer}: --data {data_dir} uses the {name} tokenizer "
                        f"(drop the override: the tokenizer comes from the data)")
    notes = []
    if config.model.tokenizer != name:
        notes.append(f"--preset {preset} was tuned for the {config.model.tokenizer} tokenizer; --data {data_dir} "
                     f"uses {name} ({vocab_size} tokens), so the model takes its vocabulary from the data")
    if (config.model.tokenizer, config.model.vocab_size) != (name, vocab_size):
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, tokenizer=name,
                                                                        vocab_size=vocab_size))
    return config, notes


def cmd_data(args) -> int:
    from edlm.data import prepare_corpus

    started = time.perf_counter()
    meta = prepare_corpus(args.corpus, args.out, args.path, tokenizer=args.tokenizer, workers=args.workers,
                          chunk_chars=args.chunk_chars, progress=not args.no_progress and sys.stderr.isatty())
    for note in meta.get("notes", []):
        print(f"edlm: note: {note}", file=sys.stderr)
    sizes = ", ".join(f"{k} {v:,} tokens / {meta['chars'][k]:,} characters" for k, v in meta["sizes"].items())
    print(f"prepared {args.corpus} with the {meta['tokenizer']['name']} tokenizer in {args.out} ({sizes}) in "
          f"{time.perf_counter() - started:.1f}s")
    return 0


def cmd_law(args) -> int:
    """``edlm law make``: draw a known law, write it and a corpus drawn from it (``edlm.law``)."""
    from edlm.law import make_law, make_law_folder

    out = Path(args.out)
    _check_writable(out, "--out")
    if args.kind == "hmm" and args.order is not None:
        raise UserError("--order: an HMM has no Markov order; leave --order out with --kind hmm")
    options = {"stay": args.stay} if args.kind == "hmm" else {"pool": args.pool} if args.pool else {}
    law = make_law(args.kind, args.vocab, args.support, args.seed, order=args.order or 1, hidden=args.hidden,
                   **options)
    corpus_seed = args.seed + 1 if args.corpus_seed is None else args.corpus_seed
    started = time.perf_counter()
    record = make_law_folder(law, out, args.length, args.tokens, corpus_seed)
    sizes = record.get("corpus", {}).get("sizes")
    corpus = (f"corpus train/val/test {sizes['train']:,}/{sizes['val']:,}/{sizes['test']:,} tokens" if sizes
              else "no corpus")
    print(f"made a {args.kind} law ({law.vocab_size} symbols, {law.tokenizer_name} tokenizer) in {out}: entropy rate "
          f"{record['entropy_rate']:.4f} nats/token, {record['row_entropy']:.4f} per token of a row of {args.length}; "
          f"{corpus} ({time.perf_counter() - started:.1f}s)")
    if sizes:
        print(f"next: edlm data prepare --corpus law:{out} --out DATA, then train with model.seq_len={args.length}")
    return 0


def cmd_train(args) -> int:
    """Under torchrun every process trains its shard of each global batch (the process group is joined and
    left here, around ``train``)."""
    from edlm.config import resolve_train_config
    from edlm.training.loop import train

    config = resolve_train_config(args.preset, args.model, args.overrides, args.max_steps, args.negatives)
    config, notes = _adapt_to_data(config, args.data, args.preset, args.overrides)
    out = Path(args.out)
    _check_writable(out, "--out")
    if config.model.kind != "nce" and args.denoiser:
        raise UserError("--denoiser is only used with --model nce")
    if config.model.kind == "nce" and not args.denoiser:
        raise UserError("--model nce needs --denoiser RUN_DIR (the trained MDLM)")
    with _processes(args.device) as info:
        for note in notes if info.is_main else ():
            print(f"edlm: note: {note}", file=sys.stderr)
        denoiser = init_state = None
        if config.model.kind == "nce":
            from edlm.training.nce import load_denoiser_for_nce

            denoiser, init_state = load_denoiser_for_nce(args.denoiser, config, str(info.device))
        summary = train(config, args.data, out, resume=args.resume, max_minutes=args.max_minutes,
                        denoiser=denoiser, init_state=init_state, progress=not args.no_progress, process=info)
    if info.is_main:
        from edlm.checkpoint import save_run_tokenizer

        save_run_tokenizer(out, Path(args.data))  # sampling and evaluation decode with it, without the data folder
        print(f"trained {config.model.kind} to step {summary['step']} ({summary['stop_reason']}) in "
              f"{summary['seconds']:.0f}s; run folder {out}")
    return 0


def cmd_import_mdlm(args) -> int:
    from edlm.training.importer import import_mdlm, import_mdlm_hf

    if args.hf:
        config, notes = import_mdlm_hf(args.hf, args.out, args.preset, args.tokenizer, args.overrides)
    else:
        config, notes = import_mdlm(args.ckpt, args.out, args.preset, args.overrides)
    for note in notes:
        print(f"edlm: note: {note}", file=sys.stderr)
    print(f"imported {args.hf or args.ckpt} into {args.out} ({config.model.n_layers} layers, "
          f"hidden {config.model.hidden}, "
          f"vocab {config.model.vocab_size}); load it with --run {args.out}")
    return 0


def cmd_eval(args) -> int:
    """``edlm.api.likelihood`` over processes: under torchrun each process computes the figures of a block of
    whole batches (``edlm.parallel.shard``; every batch's draws depend on the seed and its position only) and
    rank 0 joins them: the report equals a one-process run's."""
    from edlm import api
    from edlm.config import LikelihoodConfig
    from edlm.flags import config_from_args
    from edlm.likelihood.report import report_lines
    from edlm.parallel import gather_to_rank0, shard

    settings = config_from_args(LikelihoodConfig, args)
    with _processes(args.device) as info:
        job = api.prepare_likelihood(api.load(args.run, info.device), args.data, settings)
        rows = shard(job.sequences.shape[0], info.rank, info.world, settings.batch_size)
        parts = gather_to_rank0(job.per_sequence(rows, progress=not args.json and info.is_main))
        if parts is None:  # not rank 0: its figures went to rank 0
            return 0
        result = job.report(parts)
    print(json.dumps(result) if args.json else "\n".join(report_lines(result)))
    return 0


def cmd_sample(args) -> int:
    """``edlm.api.sample`` over processes: under torchrun each process samples a contiguous block of whole
    batches (every batch seeded from (seed, batch index) only) and rank 0 gathers, prints and writes: the texts
    equal a one-process run's."""
    from tqdm.auto import tqdm

    from edlm import api
    from edlm.parallel import gather_to_rank0, shard
    from edlm.sampling.config import sample_config_from_args
    from edlm.sampling.generate import merge_sample_stats

    config = sample_config_from_args(args)
    if args.out:
        _check_writable(Path(args.out).parent, "--out", args.out)
    with _processes(args.device) as info:
        model = api.load(args.run, info.device)
        rows = shard(config.num, info.rank, info.world, config.batch_size)
        started = time.perf_counter()
        bar = tqdm(desc="sample", leave=False, disable=args.json or not info.is_main or not sys.stderr.isatty())
        samples = api.sample(model, config, rows=rows, progress=bar.update)
        bar.close()
        parts = gather_to_rank0((samples.texts, len(samples.texts), {**samples.costs, **samples.details},
                                 time.perf_counter() - started, samples.tokens.tolist()))
    if parts is None:  # not rank 0: its samples went to rank 0
        return 0
    for note in samples.notes:
        print(f"edlm: note: {note}", file=sys.stderr)
    texts = [text for part in parts for text in part[0]]
    stats = merge_sample_stats([(part[1], part[2]) for part in parts])
    stats.pop("seconds", None)  # the record's seconds is the wall clock below
    seconds = time.perf_counter() - started  # wall clock of the whole job (rank 0 waited for the others)
    if info.world > 1:  # each process's own time, and the sum of their work
        stats.update(processes=info.world, process_seconds=[part[3] for part in parts],
                     seconds_all_processes=sum(part[3] for part in parts))
    record = {"samples": texts, "seconds": seconds, "tokens_per_second": len(texts) * samples.length / seconds,
              **stats, "run": str(args.run), "model": samples.model_kind, "length": samples.length,
              "tokenizer": samples.tokenizer, "token_ids": [ids for part in parts for ids in part[4]],
              "settings": {k: v for k, v in vars(args).items() if k not in ("json", "debug", "command")}}
    if args.out:
        from edlm.fileio import write_json_atomic

        write_json_atomic(Path(args.out), record)
    if args.json:
        print(json.dumps(record))
    else:
        for index, text in enumerate(texts):
            print(f"--- sample {index} ---\n{text}")
        print(f"[{len(texts)} samples, {seconds:.2f}s, nfe {stats.get('nfe')}]", file=sys.stderr)
    return 0


def cmd_eval_gen(args) -> int:
    """``edlm.api.score`` over processes: under torchrun each process scores a block of whole judge batches;
    rank 0 gathers the scores and computes every metric (intervals, diversity, MAUVE) and the law's."""
    from edlm import api
    from edlm.evaluation.generation import report_lines
    from edlm.evaluation.law_metrics import law_report_lines
    from edlm.evaluation.samples_file import read_samples
    from edlm.parallel import gather_to_rank0, shard

    if args.judge is None and not args.law:
        raise UserError("eval-gen needs --judge (a judge model) and/or --law DIR (a known law)")
    if args.mauve and args.judge is None:
        raise UserError("--mauve needs --judge (MAUVE uses the judge's features)")
    if args.mauve and not args.reference:
        raise UserError("--mauve needs --reference DATA_DIR (a prepared data folder)")
    options = dict(law=args.law, protocol=args.protocol, reference=args.reference if args.mauve else None,
                   mauve_seeds=args.mauve_seeds, mauve_resamples=args.mauve_resamples, bootstrap=args.bootstrap,
                   seed=args.bootstrap_seed)
    if args.judge is None:  # exact metrics of a known law only: no model, one process
        result = api.score(args.samples, **options)
        print(json.dumps(result) if args.json else "\n".join(law_report_lines(result)))
        return 0
    with _processes(args.device) as info:
        texts, _ = read_samples(args.samples)  # a bad file is named before the judge loads
        judge = api.load_judge(args.judge, info.device, args.batch_size)
        rows = shard(len(texts), info.rank, info.world, args.batch_size)
        parts = gather_to_rank0(api.judge_scores(args.samples, judge, args.protocol, rows))
        if parts is None:  # not rank 0: its scores went to rank 0
            return 0
        result = api.score(args.samples, judge, scores=[score for part in parts for score in part], **options)
    for warning in result["warnings"]:
        print(f"edlm: warning: {warning}", file=sys.stderr)
    lines = report_lines(result) + (law_report_lines(result) if args.law else [])
    print(json.dumps(result) if args.json else "\n".join(lines))
    return 0


def cmd_bench(args) -> int:
    from edlm.bench import run_bench

    return run_bench(args.name, args.args)


def cmd_demo(args) -> int:
    from edlm.bench.demo import run_demo

    return run_demo(Path(args.out), args.minutes, args.quick, args.device)


def cmd_export_hf(args) -> int:
    from edlm.training.exporter import export_hf

    files = export_hf(args.run, args.dir, args.weights)
    print(f"exported {args.run} to {args.dir} (MDLM-OWT layout: {', '.join(files)})")
    return 0


COMMANDS = {"data": cmd_data, "law": cmd_law, "train": cmd_train, "eval": cmd_eval, "sample": cmd_sample,
            "eval-gen": cmd_eval_gen, "bench": cmd_bench, "demo": cmd_demo, "import-mdlm": cmd_import_mdlm,
            "export-hf": cmd_export_hf}
