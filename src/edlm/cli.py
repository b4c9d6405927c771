"""The ``edlm`` command: data | law | train | eval | sample | eval-gen | bench | demo | import-mdlm | export-hf.

Inputs are checked here, once; a bad input exits with status 2 and one line naming the flag or file
(``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import sys

from edlm.config import LikelihoodConfig
from edlm.data.tokenizers import TOKENIZER_HELP
from edlm.errors import EdlmError
from edlm.bench import BENCHES
from edlm.evaluation.mauve_score import DEFAULT_MAUVE_RESAMPLES
from edlm.evaluation.protocols import PROTOCOLS
from edlm.flags import DefaultsHelpFormatter, OneLineParser, add_config_flags, float_in, positive_int


class _Parser(OneLineParser):
    """The top-level parser (subcommand parsers inherit its one-line errors)."""


def _debug_parent() -> argparse.ArgumentParser:
    """``--debug`` accepted after any subcommand too (SUPPRESS: absent there, the top-level value stands)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")
    return parent


def _subparsers(parser: argparse.ArgumentParser, dest: str):
    """A subparser group whose parsers all accept ``--debug`` and show defaults in ``--help``."""
    group = parser.add_subparsers(dest=dest, required=True)
    add = group.add_parser

    def add_parser(name, **kwargs):
        return add(name, parents=[_debug_parent()], formatter_class=DefaultsHelpFormatter, **kwargs)

    group.add_parser = add_parser
    return group


def _nproc_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc", type=positive_int("--nproc"), default=1,
                        help="run in N local worker processes that edlm starts itself (one per GPU with --device "
                             "cuda, gloo on CPU); the output equals one process's (ignored under torchrun)")


def build_parser() -> argparse.ArgumentParser:
    """The ``edlm`` parser: one small builder per subcommand, in the order ``edlm --help`` lists them."""
    parser = _Parser(prog="edlm", description="Energy-based diffusion language models", formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = _subparsers(parser, "command")
    for add in (_add_data_parser, _add_law_parser, _add_train_parser, _add_eval_parser, _add_sample_parser,
                _add_eval_gen_parser, _add_bench_parser, _add_import_parser, _add_export_parser, _add_demo_parser):
        add(sub)
    return parser


def _add_data_parser(sub) -> None:
    """``edlm data prepare``: a corpus tokenized into train/val/test splits (``edlm.data``)."""
    data = _subparsers(sub.add_parser("data", help="prepare a corpus"), "data_command")
    prep = data.add_parser("prepare", help="tokenize a corpus into train/val/test splits")
    prep.add_argument("--corpus", required=True, help="shakespeare (embedded) | text8 | files | law:DIR (the corpus "
                                                      "of a known law made by `edlm law make`)")
    prep.add_argument("--out", required=True, help="output data folder")
    prep.add_argument("--path", help="text8[.zip] for --corpus text8; a file or folder of .txt/.jsonl (a `text` "
                                     "field per line) for --corpus files")
    prep.add_argument("--tokenizer", help=TOKENIZER_HELP + "; default: char (law:DIR corpora: the law's own)")
    prep.add_argument("--workers", type=positive_int("--workers"),
                      help="tokenizing processes (default: CPU count, at most 8)")
    prep.add_argument("--chunk-chars", type=positive_int("--chunk-chars"), default=65536,
                      help="characters read per chunk; bounds memory")
    prep.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_train_parser(sub) -> None:
    """``edlm train``: an MDLM denoiser, an AR model or an NCE energy (``edlm.training``)."""
    train = sub.add_parser("train", help="train an MDLM denoiser, an AR model or an NCE energy")
    train.add_argument("--data", required=True, help="data folder made by `edlm data prepare`")
    train.add_argument("--preset", default="char-small", help="named model + training settings (see README)")
    train.add_argument("--model", default="mdlm",
                       help="mdlm (denoiser) | ar (autoregressive: energy, judge) | nce (energy network)")
    train.add_argument("--out", required=True, help="run folder to create (config, metrics, checkpoints)")
    train.add_argument("--max-steps", type=positive_int("--max-steps"),
                       help="stop after this many optimiser steps (overrides train.max_steps)")
    train.add_argument("--max-minutes", type=float_in("--max-minutes", 0, 1e7, low_open=True),
                       help="stop after this much wall-clock time, with a checkpoint")
    train.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in --out")
    train.add_argument("--denoiser", help="NCE only: run folder of the frozen MDLM denoiser")
    train.add_argument("--negatives", type=positive_int("--negatives"), help="NCE only: negatives per positive")
    train.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda if available)")
    _nproc_flag(train)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-3 model.n_layers=4")


def _add_eval_parser(sub) -> None:
    """``edlm eval``: likelihood on a split (``edlm.api.likelihood``)."""
    ev = sub.add_parser("eval", help="likelihood of a trained model on a split: MDLM NELBO, AR NLL, or EDLM "
                                     "bounds and estimates with --energy")
    ev.add_argument("--run", required=True, help="run folder of the evaluated model (MDLM denoiser or AR model)")
    ev.add_argument("--data", required=True, help="data folder made by `edlm data prepare`")
    add_config_flags(ev, LikelihoodConfig)
    ev.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda if available)")
    _nproc_flag(ev)
    ev.add_argument("--json", action="store_true", help="print one JSON object")


def _add_sample_parser(sub) -> None:
    """``edlm sample``: the flags of ``SampleConfig`` and of every registered sampler (``edlm.api.sample``)."""
    from edlm.sampling.config import add_sample_flags

    sa = sub.add_parser("sample", help="generate text (MDLM, EDLM importance sampling, or the AR baseline)")
    sa.add_argument("--run", required=True, help="run folder of a trained MDLM denoiser (or an AR model), or law:DIR "
                                                 "(a known law: its exact denoiser)")
    add_sample_flags(sa)
    sa.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda if available)")
    _nproc_flag(sa)
    sa.add_argument("--out", help="also write the JSON result (samples, settings, timings) to this file")
    sa.add_argument("--json", action="store_true", help="print one JSON object instead of the texts")


def _add_eval_gen_parser(sub) -> None:
    """``edlm eval-gen``: generation quality under a judge and/or a known law (``edlm.api.score``)."""
    eg = sub.add_parser("eval-gen", help="generative perplexity and entropy of samples under a judge")
    eg.add_argument("--samples", required=True, help="JSON written by `edlm sample --json/--out`")
    eg.add_argument("--judge", help="run:DIR (an edlm AR model) or hf:DIR_OR_NAME (a HF causal LM: a local folder or a "
                                    "Hub name such as gpt2-large); needed unless --law is given")
    eg.add_argument("--law", metavar="DIR", help="a known law (`edlm law make`): add its exact metrics (true NLL, "
                                                 "forbidden rate, n-gram total variation)")
    eg.add_argument("--batch-size", type=positive_int("--batch-size"), default=16, help="texts per judge forward pass")
    eg.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda if available)")
    _nproc_flag(eg)
    eg.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    eg.add_argument("--protocol", default="native", choices=list(PROTOCOLS),
                    help="gen-PPL and entropy rules: native (edlm: documents behind BOS, character entropy), mdlm "
                         "(no BOS, non-EOS tokens + first EOS), remdm (mdlm's gen-PPL, entropy of the sampler's "
                         "token ids in nats) or edlm (the EDLM paper's table, edlm's reading); judge bits per "
                         "character are always edlm's (docs/method.md)")
    eg.add_argument("--mauve", action="store_true",
                    help="also compute MAUVE against --reference by ReMDM's protocol (the judge's last-token "
                         "features, texts cut to the sample length)")
    eg.add_argument("--reference", metavar="DATA_DIR",
                    help="prepared data folder; whole rows of its val split, as long as the samples, are MAUVE's "
                         "references")
    eg.add_argument("--mauve-seeds", type=lambda text: [int(s) for s in text.split(",")], default="25",
                    help="comma-separated k-means seeds, MAUVE averaged over them (mauve's default: 25)")
    eg.add_argument("--mauve-resamples", type=int, default=DEFAULT_MAUVE_RESAMPLES,
                    help="half-samples for MAUVE's 95%% interval (one MAUVE each; 0: no interval)")
    eg.add_argument("--bootstrap", type=positive_int("--bootstrap"), default=2000,
                    help="bootstrap resamples for the 95%% intervals")
    eg.add_argument("--bootstrap-seed", type=int, default=0,
                    help="numpy seed of the bootstrap (also picks the MAUVE reference rows)")


def _add_bench_parser(sub) -> None:
    """``edlm bench NAME ...``: each benchmark parses its own flags (``edlm.bench``)."""
    bench = sub.add_parser("bench", help=f"benchmarks ({', '.join(BENCHES)})")
    bench.add_argument("name", help=" | ".join(BENCHES) + " (`edlm bench NAME --help` for its flags)")
    bench.add_argument("args", nargs=argparse.REMAINDER)


def _add_import_parser(sub) -> None:
    """``edlm import-mdlm``: MDLM weights into a run folder (``edlm.training.importer``)."""
    imp = sub.add_parser("import-mdlm", help="import MDLM weights (Lightning .ckpt, .safetensors, or the Hugging "
                                             "Face repo: a local copy or its Hub name) into a run folder")
    source = imp.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="MDLM checkpoint file, read by PyTorch's weights-only loader")
    source.add_argument("--hf", help="the Hugging Face repo kuleshov-group/mdlm-owt: a local copy (config.json + "
                                     "model.safetensors) or its Hub name (fetches json/safetensors/txt files only, "
                                     "or uses the cached copy); sizes from its config.json, no remote code")
    imp.add_argument("--out", required=True, help="new run folder to create")
    imp.add_argument("--preset", default="text8-paper", help="training settings (and for --ckpt: n_heads, seq_len)")
    imp.add_argument("--tokenizer", help="with --hf: the run's tokenizer (default: the folder's tokenizer files, "
                                         "written by `edlm export-hf`, else gpt2 as MDLM-OWT)")
    imp.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.n_heads=12 model.seq_len=1024")


def _add_export_parser(sub) -> None:
    """``edlm export-hf``: an MDLM run in the MDLM-OWT layout (``edlm.training.exporter``)."""
    exp = sub.add_parser("export-hf", help="write an MDLM run as config.json + model.safetensors in the MDLM-OWT "
                                           "layout, with its tokenizer files")
    exp.add_argument("run", help="run folder of a trained MDLM denoiser")
    exp.add_argument("dir", help="new folder to write")
    exp.add_argument("--weights", default="ema", choices=["ema", "model"],
                     help="EMA weights (as MDLM releases them) or the raw weights")


def _add_demo_parser(sub) -> None:
    """``edlm demo``: the README's main job (``edlm.bench.demo``)."""
    demo = sub.add_parser("demo", help="the README's main job: a known law and Shakespeare, MDLM against EDLM, "
                                       "report.html")
    demo.add_argument("--out", default="out/demo", help="folder for the corpora, the runs and the report")
    demo.add_argument("--minutes", type=float_in("--minutes", 0.0, 1e4, low_open=True), default=10.0,
                      help="budget of the whole job on 2 CPU cores (the five models' training budgets scale with it)")
    demo.add_argument("--quick", action="store_true", help="seconds instead of minutes (smoke test)")
    demo.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda if available)")


def _add_law_parser(sub) -> None:
    """``edlm law make``: a known law and a corpus drawn from it (``edlm.law``)."""
    law = _subparsers(sub.add_parser("law", help="known-law languages (exact metrics for samplers)"), "law_command")
    make = law.add_parser("make", help="draw a law, write it (law.safetensors + law.json) and a corpus from it")
    make.add_argument("--kind", default="markov", choices=["markov", "hmm"],
                      help="markov (sparse order-1/2 chain) | hmm (hidden state that persists)")
    make.add_argument("--order", type=positive_int("--order"), help="Markov order, 1 or 2 (default 1; not for hmm)")
    make.add_argument("--vocab", type=positive_int("--vocab"), default=27,
                      help="symbols V (27: the char alphabet; other V use the sym:V tokenizer)")
    make.add_argument("--support", type=positive_int("--support"), default=3,
                      help="markov: successors allowed per context; hmm: private symbols per hidden state")
    make.add_argument("--seed", type=int, default=0, help="numpy seed of the law")
    make.add_argument("--out", required=True, help="law folder to write")
    make.add_argument("--length", type=positive_int("--length"), default=128, help="row length (model.seq_len)")
    make.add_argument("--tokens", type=int, default=2_000_000, help="corpus size in tokens, split 90/5/5 (0: none)")
    make.add_argument("--corpus-seed", type=int, help="numpy seed of the corpus (default: --seed + 1)")
    make.add_argument("--hidden", type=positive_int("--hidden"), default=4, help="hmm: hidden states")
    make.add_argument("--stay", type=float_in("--stay", 0.0, 1.0, low_open=True), default=0.95,
                      help="hmm: probability that the hidden state stays")
    make.add_argument("--pool", type=positive_int("--pool"),
                      help="markov order 2: successor pool per symbol (default: V up to 64 symbols, else 4 * support)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--"]:  # `torchrun ... -m edlm -- sample --run DIR`: "--" stops torchrun reading --run / --num
        argv = argv[1:]
    args = parser.parse_args(argv)
    from edlm.commands import COMMANDS, user_error

    try:
        if getattr(args, "nproc", 1) > 1:  # edlm CMD --nproc N: start the workers, unless this is one of them
            from edlm.parallel import launched_by_torchrun, run_workers

            if not launched_by_torchrun():
                return run_workers(args.nproc, argv)
        return COMMANDS[args.command](args) or 0
    except KeyboardInterrupt:
        print("edlm: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        # A user error (bad flag, file or setting) is one line; anything else is a bug: show its traceback.
        if args.debug or not user_error(error):
            raise
        from edlm.parallel import report_user_error

        report_user_error(error.flag_message() if isinstance(error, EdlmError) else str(error))  # input as its flag
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
