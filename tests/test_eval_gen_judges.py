"""The judges of ``edlm eval-gen`` (``make_judge``): a ``run:`` judge (a saved tiny AR run) scores exactly
``ar_loss`` window by window and gives last-token or mean-pooled features; an ``hf:`` judge (a tiny local GPT-2
with a character tokenizer) scores every token behind BOS and gives mean last hidden states; bad judge specs
are named in the error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from toys import SENTENCE

from edlm.data import MASK_ID, encode
from edlm.evaluation.generation import (
    GenerationEvalError,
    generation_metrics,
    make_judge,
)
from edlm.models.ar import ar_loss


# ----------------------------------------------------------------------------------------------------------
# the run: judge


def test_run_judge_matches_ar_loss(ar_run):
    run, model, config = ar_run
    seq_len = config.model.seq_len
    judge = make_judge(f"run:{run}", "cpu", batch_size=2)
    text = (SENTENCE + " ") * 2
    window = text[:seq_len]
    [(nll, tokens, chars)] = judge.nll([window])
    with torch.no_grad():
        expected = ar_loss(model, torch.from_numpy(encode(window).astype("int64"))[None], MASK_ID).item() * seq_len
    assert (tokens, chars) == (seq_len, seq_len)
    assert nll == pytest.approx(expected, rel=1e-5)
    # a text longer than seq_len is scored in consecutive windows, each from the start token
    long_text = text[:2 * seq_len + 5]
    pieces = [long_text[i:i + seq_len] for i in range(0, len(long_text), seq_len)]
    with torch.no_grad():
        windowed = sum(ar_loss(model, torch.from_numpy(encode(p).astype("int64"))[None], MASK_ID).item() * len(p)
                       for p in pieces)
    results = judge.nll([long_text, window, "a"])
    assert results[0][0] == pytest.approx(windowed, rel=1e-5) and results[0][1] == len(long_text)
    assert results[1][0] == pytest.approx(expected, rel=1e-5)  # padding in a mixed batch changes nothing
    metrics = generation_metrics([long_text, window], judge)
    assert metrics["judge_bpc"] == pytest.approx((windowed + expected) / (len(long_text) + seq_len) / math.log(2),
                                                 rel=1e-5)


def test_run_judge_features_last_token_and_mean_pooled_and_batch_independent(ar_run):
    from edlm.models.ar import ar_inputs

    run, model, config = ar_run
    seq_len, hidden = config.model.seq_len, config.model.hidden
    judge = make_judge(f"run:{run}", batch_size=2)
    short, long_text = SENTENCE[:10], (SENTENCE + " ") * 2
    for pooling in ("last", "mean"):
        features = judge.features([short, long_text, "", short], pooling=pooling)
        assert features.shape == (4, hidden) and features.dtype == np.float32
        assert np.allclose(features[0], features[3], atol=1e-6) and not np.allclose(features[0], features[1])
        assert (features[2] == 0).all()
        assert np.allclose(judge.features([short], pooling=pooling)[0], features[0], atol=1e-5)  # no batch effect
        # a text is cut to what fits one window behind the start token
        cut = long_text[:seq_len - 1]
        assert np.allclose(judge.features([cut], pooling=pooling)[0], features[1], atol=1e-5)
    captured = []
    hook = model.output_layer.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    with torch.no_grad():  # [start] + the text: the state after reading the text's last character
        model(ar_inputs(torch.from_numpy(encode(short + "x").astype("int64"))[None], MASK_ID))
    hook.remove()
    assert np.allclose(judge.features([short], pooling="last")[0], captured[0][0, -1].numpy(), atol=1e-5)
    assert np.allclose(judge.features([short], pooling="mean")[0], captured[0][0, 1:].mean(0).numpy(), atol=1e-5)


def test_run_judge_rejects_characters_outside_the_alphabet(ar_run):
    judge = make_judge(f"run:{ar_run[0]}")
    with pytest.raises(GenerationEvalError, match="sample 1: character 'X'"):
        judge.nll(["fine", "not Xfine"])


def test_judge_spec_errors(tmp_path):
    with pytest.raises(GenerationEvalError, match="unknown judge kind 'gpt'"):
        make_judge("gpt:somewhere")
    with pytest.raises(GenerationEvalError, match="expected run:DIR"):
        make_judge("just-a-folder")
    with pytest.raises(GenerationEvalError, match="no such folder"):
        make_judge(f"run:{tmp_path / 'missing'}")
    with pytest.raises(GenerationEvalError, match="no such folder"):
        make_judge(f"hf:{tmp_path / 'missing'}")


def test_hf_judge_on_a_folder_without_a_model(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(GenerationEvalError, match="cannot load a causal LM"):
        make_judge(f"hf:{tmp_path}")


# ----------------------------------------------------------------------------------------------------------
# the hf: judge (a tiny local GPT-2 with a character tokenizer)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    pytest.importorskip("transformers")
    from helpers_hf import save_tiny_char_gpt2

    return save_tiny_char_gpt2(tmp_path_factory.mktemp("hf_judge"), n_positions=16)


def manual_hf_nll(folder, text: str, chunk: int) -> float:
    """Closed loop: [BOS] + each chunk of token ids (the model reads all but the chunk's last id), sum of -log p of
    every real token."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    total = 0.0
    for start in range(0, len(ids), chunk):
        fed = torch.tensor([[tokenizer.bos_token_id] + ids[start:start + chunk]])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(fed[:, :-1]).logits[0].double(), -1)
        total -= log_probs.gather(-1, fed[0, 1:, None]).sum().item()
    return total


def test_hf_judge_scores_every_token_behind_bos(hf_folder):
    judge = make_judge(f"hf:{hf_folder}", batch_size=3)
    assert judge.max_positions == 16
    short, long_text = "hello world", SENTENCE  # 11 tokens; 43 tokens = windows of 16 + 16 + 11
    results = judge.nll([short, long_text, ""])
    assert results[0][1:] == (11, 11) and results[1][1:] == (43, 43) and results[2] == (0.0, 0, 0)
    assert results[0][0] == pytest.approx(manual_hf_nll(hf_folder, short, 16), rel=1e-5)
    assert results[1][0] == pytest.approx(manual_hf_nll(hf_folder, long_text, 16), rel=1e-5)
    metrics = generation_metrics([short, long_text], judge)
    assert metrics["gen_ppl"] == pytest.approx(math.exp((results[0][0] + results[1][0]) / 54), rel=1e-5)
    # character tokenizer: token entropy == character entropy
    assert metrics["token_entropy_bits"] == pytest.approx(metrics["entropy_bits"])


def test_hf_judge_features_are_the_mean_last_hidden_state_behind_bos(hf_folder):
    import transformers

    judge = make_judge(f"hf:{hf_folder}", batch_size=2)
    features = judge.features(["hello world", "abc", ""], pooling="mean")
    assert features.shape == (3, 32) and (features[2] == 0).all()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_folder), local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_folder), local_files_only=True).eval()
    fed = torch.tensor([[tokenizer.bos_token_id] + tokenizer("abc", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        expected = model(fed, output_hidden_states=True).hidden_states[-1][0, 1:].mean(0).numpy()
    assert np.allclose(features[1], expected, atol=1e-5)
