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


def _check_tokenizer(config, data_dir, flag: str, run) -> None:
    """The run's model must use the data folder's tokenizer (one line naming both when not)."""
    from edlm.data import load_meta
    from edlm.data.tokenizers import check_same_tokenizer

    check_same_tokenizer({"name": config.model.tokenizer, "vocab_size": config.model.vocab_size},
                         load_meta(data_dir)["tokenizer"], f"{flag} {run}", f"--data {data_dir}")


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
    """Under torchrun each process computes the figures of a block of whole batches (``edlm.parallel.shard``;
    every batch's draws depend on the seed and its position only) and rank 0 joins them: the report equals a
    one-process run's."""
    from edlm.checkpoint import load_model, load_run_tokenizer
    from edlm.config import LikelihoodConfig
    from edlm.data import DataError, eval_chunks, load_split
    from edlm.data.splits import chars_per_token
    from edlm.flags import config_from_args
    from edlm.likelihood.report import (
        build_energy,
        check_evaluable,
        join_rows,
        likelihood_rows,
        likelihood_summary,
        report_lines,
    )
    from edlm.parallel import gather_to_rank0, shard

    settings = config_from_args(LikelihoodConfig, args)
    with _processes(args.device) as info:
        config, model = load_model(args.run, device=str(info.device))
        try:
            chunks = eval_chunks(load_split(args.data, settings.split), config.model.seq_len)
        except DataError as error:
            raise DataError(f"--data {args.data}, {settings.split} split: {error}") from None
        chunks = chunks[: settings.max_sequences]  # None: all
        _check_tokenizer(config, args.data, "--run", args.run)
        energy = build_energy(settings, config, info.device, load_run_tokenizer(Path(args.run), config))
        check_evaluable(config, energy)
        rows = shard(chunks.shape[0], info.rank, info.world, settings.batch_size)
        progress = not args.json and info.is_main
        mine = likelihood_rows(settings, config, model, chunks[rows.start:rows.stop], energy, rows.start, progress)
        parts = gather_to_rank0(mine)
        if parts is None:  # not rank 0: its figures went to rank 0
            return 0
        result = likelihood_summary(settings, config, join_rows(parts), chunks.shape[1],
                                    chars_per_token(args.data, settings.split), energy)
    result.update(run=str(args.run))
    print(json.dumps(result) if args.json else "\n".join(report_lines(result)))
    return 0


def cmd_sample(args) -> int:
    """Under torchrun each process samples a contiguous block of whole batches (every batch seeded from
    (seed, batch index) only) and rank 0 gathers, prints and writes: the texts equal a one-process run's."""
    import dataclasses

    from tqdm.auto import tqdm

    from edlm.checkpoint import load_model, load_run_tokenizer
    from edlm.parallel import batches_of, cleanup, gather_to_rank0, init_from_env, shard
    from edlm.sampling.config import sample_config_from_args
    from edlm.sampling.generate import build_template, generate, merge_sample_stats

    sample = sample_config_from_args(args)
    info = init_from_env(args.device)
    device = str(info.device)
    config, model = load_model(args.run, device=device)
    tokenizer = load_run_tokenizer(Path(args.run), config)
    length = sample.length or config.model.seq_len
    if length > config.model.seq_len:
        raise UserError(f"--length {length}: longer than the model's sequence length {config.model.seq_len}")
    sample = dataclasses.replace(sample, length=length)
    if args.out:
        _check_writable(Path(args.out).parent, "--out", args.out)
    _, notes = build_template(1, length, sample.prompt, sample.infill, tokenizer, config.model.mask_id)
    for note in notes if info.is_main else ():
        print(f"edlm: note: {note}", file=sys.stderr)
    rows = shard(sample.num, info.rank, info.world, sample.batch_size)
    started = time.perf_counter()
    if config.model.kind == "ar":
        if sample.energy or sample.infill:
            raise UserError("--energy/--infill need a diffusion model; --run holds an AR model")
        from edlm.sampling.ar import generate_ar

        texts, stats = generate_ar(model, config, sample.num, length, sample.seed, sample.temperature,
                                   sample.top_p, sample.prompt, sample.batch_size, rows=rows, tokenizer=tokenizer)
        token_ids = stats.pop("token_ids")
    elif config.model.kind == "mdlm":
        energy = None
        if sample.energy:
            from edlm.energy import make_energy

            energy = make_energy(sample.energy, config.model, sample.energy_mode, device, sample.precision,
                                 tokenizer)
        bar = tqdm(desc="sample", leave=False, disable=args.json or not info.is_main or not sys.stderr.isatty())
        texts, result = generate(model, config, sample, energy, progress=bar.update,
                                 batches=batches_of(rows, sample.batch_size), tokenizer=tokenizer)
        bar.close()
        stats, token_ids = result.costs(), result.tokens.cpu().tolist()
    else:
        raise UserError(f"--run {args.run}: cannot sample from an {config.model.kind!r} model; pass it as "
                        f"--energy nce:{args.run} with the denoiser's --run")
    parts = gather_to_rank0((texts, len(texts), stats, time.perf_counter() - started, token_ids))
    if not info.is_main:
        cleanup()
        return 0
    texts = [text for part in parts for text in part[0]]
    stats = merge_sample_stats([(part[1], part[2]) for part in parts])
    stats.pop("seconds", None)  # the record's seconds is the wall clock below
    seconds = time.perf_counter() - started  # wall clock of the whole job (rank 0 waited for the others)
    if info.world > 1:  # each process's own time, and the sum of their work
        stats.update(processes=info.world, process_seconds=[part[3] for part in parts],
                     seconds_all_processes=sum(part[3] for part in parts))
    record = {"samples": texts, "seconds": seconds, "tokens_per_second": len(texts) * length / seconds,
              **stats, "run": str(args.run), "model": config.model.kind, "length": length,
              "tokenizer": tokenizer.name, "token_ids": [ids for part in parts for ids in part[4]],
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
    cleanup()
    return 0


def cmd_eval_gen(args) -> int:
    """Under torchrun each process scores a block of whole judge batches; rank 0 gathers the scores and computes
    every metric (intervals, diversity, MAUVE)."""
    from edlm.evaluation.generation import check_judge_reads, evaluate_samples_file, report_lines, score_samples
    from edlm.evaluation.judges import GenerationEvalError, make_judge
    from edlm.evaluation.samples_file import read_samples, sample_length
    from edlm.parallel import cleanup, gather_to_rank0, init_from_env, shard

    if args.judge is None:  # exact metrics of a known law only
        if not args.law:
            raise UserError("eval-gen needs --judge (a judge model) and/or --law DIR (a known law)")
        if args.mauve:
            raise UserError("--mauve needs --judge (MAUVE uses the judge's features)")
        from edlm.evaluation.law_metrics import evaluate_law_file, law_report_lines

        try:
            result = evaluate_law_file(args.samples, args.law, args.bootstrap, args.bootstrap_seed)
        except GenerationEvalError as error:
            raise UserError(f"--{error.subject} {error}" if error.subject else str(error)) from None
        print(json.dumps(result) if args.json else "\n".join(law_report_lines(result)))
        return 0
    if args.mauve and not args.reference:
        raise UserError("--mauve needs --reference DATA_DIR (a prepared data folder)")
    info = init_from_env(args.device)
    try:
        texts, record = read_samples(args.samples)
        judge = make_judge(args.judge, str(info.device), args.batch_size)
        check_judge_reads(judge, record)
        rows = shard(len(texts), info.rank, info.world, args.batch_size)
        parts = gather_to_rank0(score_samples(texts, judge, args.protocol, rows, sample_length(record)))
        if parts is None:  # not rank 0: its scores went to rank 0
            return 0
        result = evaluate_samples_file(args.samples, judge, args.judge, args.protocol,
                                       args.reference if args.mauve else None, args.mauve_seeds, args.bootstrap,
                                       args.bootstrap_seed, [score for part in parts for score in part],
                                       args.mauve_resamples)
    except GenerationEvalError as error:
        raise UserError(f"--{error.subject} {error}" if error.subject else str(error)) from None
    finally:
        cleanup()
    for warning in result["warnings"]:
        print(f"edlm: warning: {warning}", file=sys.stderr)
    lines = report_lines(result)
    if args.law:
        from edlm.evaluation.law_metrics import evaluate_law_file, law_report_lines

        try:
            result.update(evaluate_law_file(args.samples, args.law, args.bootstrap, args.bootstrap_seed))
        except GenerationEvalError as error:
            raise UserError(f"--{error.subject} {error}" if error.subject else str(error)) from None
        lines += law_report_lines(result)
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
