"""``edlm data prepare --corpus law:DIR``: a known law's corpus (``edlm law make``) as a prepared data folder.

The law folder holds one stationary run of the law per split (``corpus.safetensors``); the ids are written
verbatim (no text, no normalisation) with the law's tokenizer: ``char`` for 27 symbols (id i = letter i of the
alphabet), else ``sym:V``. Training draws windows of ``model.seq_len`` tokens at random offsets of the train
split: since the split is one stationary run, every such window is a row drawn from the law (set
``model.seq_len`` to the law's length, written in ``meta.json`` under ``law.length``). Evaluation rows
(consecutive, non-overlapping windows) are rows of the law too, though not independent ones.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from edlm.data.errors import DataError
from edlm.data.splits import FORMAT_VERSION, SPLITS, prepare_out_dir, split_dtype
from edlm.data.tokenizers import get_tokenizer
from edlm.data.vocabulary import ALPHABET
from edlm.fileio import sha256_file, write_bytes_atomic, write_json_atomic


def prepare_law_corpus(law_dir: str | Path, out_dir: str | Path, tokenizer: str | None = None) -> dict:
    """Write ``train.bin``/``val.bin``/``test.bin`` and ``meta.json`` (last) from the law folder ``law_dir``.

    ``tokenizer``: None, or the law's own tokenizer name (anything else is refused). Returns the meta dict.
    """
    from edlm.law import LawError, load_corpus, read_record

    where = f"law:{law_dir}"
    try:
        record = read_record(law_dir)
        splits = load_corpus(law_dir)
    except LawError as error:
        raise DataError(f"{where}: {error}", "corpus") from None
    name = str(record["tokenizer"])
    if tokenizer is not None and tokenizer != name:
        raise DataError(f"{tokenizer}: a law corpus uses its law's tokenizer ({name}); leave the tokenizer out",
                        "tokenizer")
    law_tokenizer = get_tokenizer(name)
    vocab_size = int(record["vocab_size"])
    for split, ids in splits.items():
        if len(ids) == 0 or ids.min() < 0 or ids.max() >= vocab_size:
            raise DataError(f"{where}: the {split} split is empty or holds ids outside [0, {vocab_size})", "corpus")
    out = Path(out_dir)
    prepare_out_dir(out)
    dtype, counts = split_dtype(vocab_size), law_tokenizer.char_counts()
    (out / "meta.json").unlink(missing_ok=True)  # a stale meta must not describe the new bins
    digests, characters = {}, {}
    for split in SPLITS:
        data = splits[split].astype(dtype).tobytes()
        write_bytes_atomic(out / f"{split}.bin", data)
        digests[split] = hashlib.sha256(data).hexdigest()
        characters[split] = int(counts[splits[split]].sum())
    (out / "tokenizer.json").unlink(missing_ok=True)
    sizes = {split: int(len(splits[split])) for split in SPLITS}
    total = sum(sizes.values())
    length = int(record["length"])
    meta = {
        "format_version": FORMAT_VERSION,
        "corpus": f"law:{law_dir}",
        "tokenizer": law_tokenizer.to_meta(),
        "vocab_size": vocab_size,
        "mask_id": vocab_size,
        "eos_id": None,
        "dtype": dtype.name,
        "normalisation": "none: the law's ids, written verbatim",
        "split_fractions": [sizes[split] / total for split in SPLITS],
        "split_unit": "tokens",
        "sizes": sizes,
        "chars": characters,
        "documents": 1,
        "bin_sha256": digests,
        "invalid_utf8": 0,
        "notes": [f"law corpus: one stationary run of the law per split, so every window is a row of the law; "
                  f"train with model.seq_len={length} (the law's row length)"],
        "sources": [{"name": "corpus.safetensors", "sha256": sha256_file(Path(law_dir) / "corpus.safetensors")}],
        "law": {"folder": os.path.abspath(law_dir), "kind": record["kind"], "order": record["order"],
                "length": length, "entropy_rate": record["entropy_rate"]},
    }
    if name == "char":
        meta["alphabet"] = ALPHABET
    write_json_atomic(out / "meta.json", meta)
    return meta
