"""AR energies (``ar:RUN`` and ``hf:DIR_OR_NAME``) against brute force on V = 3, L = 3 toys and against the models' own
losses: sign, coAR masking, position 0, B > 1 and k > 1 ordering, chunking, devices, and the HF loading checks."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from toys import all_sequences

from edlm.config import ModelConfig
from edlm.energy import EnergyError, make_energy
from edlm.energy.ar import AREnergy, EnergyMismatchError
from edlm.energy.hf import HFEnergy, make_hf_energy
from edlm.models import build_model
from edlm.models.ar import ar_loss

V, L = 3, 3  # toy vocabulary and length: 27 sequences, 8 mask patterns


def tiny_ar_model(vocab_size: int = V, seq_len: int = L, seed: int = 0):
    """An edlm causal Transformer with every layer random (zero-initialised adaLN layers would be identities)."""
    config = ModelConfig(kind="ar", vocab_size=vocab_size, seq_len=seq_len, n_layers=2, hidden=32, n_heads=2,
                         cond_dim=16)
    torch.manual_seed(seed)
    model = build_model(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "adaLN_modulation" in name or "output_layer.linear" in name:
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def save_tiny_gpt2(folder, vocab_size: int = V, positions: int = 8, seed: int = 0):
    """A random GPT-2 whose last token is BOS = EOS (as GPT-2's <|endoftext|>), saved with safetensors."""
    transformers = pytest.importorskip("transformers")

    config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=positions, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(str(folder))
    return model


class Toy:
    """One energy kind on the toy, with an independent route to log p(x0) for every sequence."""

    def __init__(self, kind: str, folder):
        self.kind = kind
        if kind == "ar":
            self.model = tiny_ar_model()
        else:
            self.model = save_tiny_gpt2(folder)
            self.folder = folder

    def energy(self, mode: str, chunk_rows: int = 64):
        if self.kind == "ar":
            return AREnergy(self.model, mask_id=V, mode=mode, chunk_rows=chunk_rows)
        energy = make_hf_energy(self.folder, ModelConfig(vocab_size=V, seq_len=L), mode)
        energy.chunk_rows = chunk_rows
        return energy

    @torch.no_grad()
    def joint_log_probs(self, sequences: torch.Tensor) -> torch.Tensor:
        """log p(x0) (N,) float64 from the model's own loss: ``ar_loss`` or the HF model's ``labels=`` loss."""
        if self.kind == "ar":
            return -L * ar_loss(self.model, sequences, V).double()
        out = []
        for row in sequences:
            ids = torch.cat([torch.tensor([V - 1]), row])[None]  # BOS, then the L tokens
            out.append(-L * self.model(input_ids=ids, labels=ids).loss.double())  # mean over the L predictions
        return torch.stack(out)


@pytest.fixture(params=["ar", "hf"], scope="module")
def toy(request, tmp_path_factory):
    return Toy(request.param, tmp_path_factory.mktemp(f"gpt2-{request.param}"))


def conditional_log_prob(joint: torch.Tensor, sequences: torch.Tensor, x0: torch.Tensor, i: int) -> float:
    """log p(x0_i | x0_<i) by marginalising the enumerated joint: log P(x0_<=i) - log P(x0_<i)."""
    upto = (sequences[:, :i + 1] == x0[:i + 1]).all(-1)
    before = (sequences[:, :i] == x0[:i]).all(-1)
    return float(torch.logsumexp(joint[upto], 0) - torch.logsumexp(joint[before], 0))


def test_full_energy_is_minus_log_joint_over_all_sequences(toy):
    """full mode, log mu = 0, all masked: E = -log p(x0) exactly, so low energy = likely and position 0 counts."""
    sequences = all_sequences(V, L)  # (27, L)
    joint = toy.joint_log_probs(sequences)
    assert float(joint.exp().sum()) == pytest.approx(1.0, abs=1e-6)  # position 0 scored, [MASK] never a token
    x_t = torch.full((1, L), V)
    energies = toy.energy("full")(sequences[None], x_t, torch.zeros(1, L, V + 1))  # (1, 27)
    assert energies.dtype == torch.float64 and energies.shape == (1, V ** L)
    torch.testing.assert_close(energies[0], -joint, atol=1e-5, rtol=0)
    assert int(energies[0].argmin()) == int(joint.argmax())
    # exp(-E) normalised over every sequence is p_AR itself
    torch.testing.assert_close(torch.softmax(-energies[0], 0), joint.exp(), atol=1e-5, rtol=0)


def test_coar_scores_exactly_the_masked_conditionals_and_the_mu_term(toy):
    """Every mask pattern, every sequence: E_coar = -sum_masked log p(x_i | x_<i) + sum_masked log mu_i(x_i)."""
    sequences = all_sequences(V, L)
    joint = toy.joint_log_probs(sequences)
    energy = toy.energy("coar")
    generator = torch.Generator().manual_seed(0)
    for pattern in itertools.product([False, True], repeat=L):
        masked = torch.tensor(pattern)
        x_t = torch.where(masked, V, sequences[5])[None]  # visible tokens of one sequence; candidates need not agree
        log_mu = torch.log_softmax(torch.randn(1, L, V + 1, generator=generator, dtype=torch.float64), -1)
        energies = energy(sequences[None], x_t, log_mu)[0]  # (27,)
        expected = torch.tensor([
            sum(-conditional_log_prob(joint, sequences, x0, i) + float(log_mu[0, i, x0[i]])
                for i in range(L) if pattern[i]) for x0 in sequences], dtype=torch.float64)
        torch.testing.assert_close(energies, expected, atol=1e-5, rtol=0, msg=f"mask pattern {pattern}")


def test_position_zero_alone_is_scored(toy):
    """Only position 0 masked: E = -log p(x0_0), the marginal of the first token (not 0, not skipped)."""
    sequences = all_sequences(V, L)
    joint = toy.joint_log_probs(sequences)
    first = torch.stack([torch.logsumexp(joint[sequences[:, 0] == v], 0) for v in range(V)])  # (V,)
    x_t = torch.tensor([[V, 1, 2]])
    energies = toy.energy("coar")(sequences[None], x_t, torch.zeros(1, L, V + 1))[0]
    torch.testing.assert_close(energies, -first[sequences[:, 0]], atol=1e-5, rtol=0)
    # a non-trivial first-token distribution, so skipping position 0 would show
    assert 0.1 < float(first.exp().min()) and float(first.exp().max()) < 0.9


@pytest.mark.parametrize("mode", ["coar", "full"])
def test_rows_and_candidates_keep_their_own_energies(toy, mode):
    """B = 2 rows with different masks, k = 3 different candidates, chunks of 4 rows that cut across rows."""
    sequences = all_sequences(V, L)
    candidates = sequences[torch.tensor([[1, 13, 26], [20, 7, 3]])]  # (2, 3, L)
    x_t = torch.tensor([[V, 0, V], [2, V, V]])
    log_mu = torch.log_softmax(torch.randn(2, L, V + 1, generator=torch.Generator().manual_seed(1)), -1)
    batched = toy.energy(mode, chunk_rows=4)(candidates, x_t, log_mu)  # (2, 3)
    single = toy.energy(mode)
    one_by_one = torch.tensor([[float(single(candidates[b, j][None, None], x_t[b][None], log_mu[b][None])[0, 0])
                                for j in range(3)] for b in range(2)], dtype=torch.float64)
    torch.testing.assert_close(batched, one_by_one, atol=1e-6, rtol=0)
    assert len({round(float(e), 4) for e in batched.flatten()}) == 6  # ordering would be visible


def test_ar_energy_equals_ar_loss_on_a_char_sized_model():
    model = tiny_ar_model(vocab_size=27, seq_len=32, seed=3)
    x0 = torch.randint(0, 27, (2, 5, 32), generator=torch.Generator().manual_seed(0))
    energies = AREnergy(model, mask_id=27, mode="full", chunk_rows=3)(x0, torch.full((2, 32), 27),
                                                                       torch.zeros(2, 32, 28))
    torch.testing.assert_close(energies, 32 * ar_loss(model, x0.view(10, 32), 27).double().view(2, 5),
                               atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# hf:DIR specifics


def test_hf_model_sees_bos_then_tokens_and_never_the_mask_id(tmp_path):
    save_tiny_gpt2(tmp_path, positions=L)
    energy = make_energy(f"hf:{tmp_path}", ModelConfig(vocab_size=V, seq_len=L), "coar")
    assert isinstance(energy, HFEnergy) and energy.start_id == V - 1 and energy.mask_id == V
    seen = []
    energy.model.get_input_embeddings().register_forward_hook(lambda module, args, out: seen.append(args[0]))
    candidates = all_sequences(V, L)[None]  # (1, 27, L)
    energy(candidates, torch.tensor([[V, V, 0]]), torch.zeros(1, L, V + 1))
    inputs = torch.cat(seen)  # (27, L)
    assert int(inputs.max()) < V and bool((inputs[:, 0] == V - 1).all())
    assert torch.equal(inputs[:, 1:], candidates[0, :, :-1])
    with pytest.raises(RuntimeError, match=r"clean sequences only: found an id outside \[0, 3\) \(the denoiser's "
                                            r"\[MASK\] is 3"):
        energy(torch.tensor([[[0, V, 1]]]), torch.tensor([[V, V, V]]), torch.zeros(1, L, V + 1))


def test_hf_energy_refuses_what_it_cannot_score(tmp_path):
    folder = tmp_path / "gpt2"
    save_tiny_gpt2(folder, positions=4)
    denoiser = ModelConfig(vocab_size=V, seq_len=L)
    cases = [
        (dataclasses.replace(denoiser, vocab_size=V + 1), EnergyMismatchError,
         f"^energy hf:{folder}: its config.json has vocab_size {V} tokens, the denoiser has {V + 1}"),
        (dataclasses.replace(denoiser, seq_len=5), EnergyMismatchError, "takes 4 positions, shorter than"),
    ]
    for config, error, message in cases:
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
            make_energy(f"hf:{folder}", config)
    with pytest.raises(EnergyError, match="no config.json"):
        make_energy(f"hf:{tmp_path}", denoiser)
    with pytest.raises(EnergyError, match="missing: no such folder$"):
        make_energy(f"hf:{tmp_path / 'missing'}", denoiser)
    with pytest.raises(EnergyError, match=r"expected hf:DIR_OR_NAME"):
        make_energy("hf", denoiser)
    with pytest.raises(EnergyError, match="unknown AR energy mode 'sum'"):
        make_energy(f"hf:{folder}", denoiser, mode="sum")
    # pickle-based weights only: refused without being read
    pickled = tmp_path / "pickled"
    save_tiny_gpt2(pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(EnergyError, match=r"no model.safetensors \(found pytorch_model.bin, a pickle-based file"):
        make_energy(f"hf:{pickled}", denoiser)


def test_hf_tokenizer_is_checked_when_both_sides_have_one(tmp_path):
    from helpers_hf import save_tiny_char_gpt2

    save_tiny_char_gpt2(tmp_path, n_positions=16)  # 27 characters + <|endoftext|> = 28 tokens
    denoiser = ModelConfig(vocab_size=28, seq_len=16)
    with pytest.raises(EnergyMismatchError, match="its tokenizer has 28 tokens, the denoiser has 27"):
        make_hf_energy(tmp_path, dataclasses.replace(denoiser, vocab_size=27))

    class Shifted:
        """A tokenizer with the same size but other ids."""

        def encode(self, text):
            return [1 + i for i in same.encode(text)]

    import transformers

    same = transformers.AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    same.encode = lambda text, _tok=same: _tok(text, add_special_tokens=False)["input_ids"]
    assert make_hf_energy(tmp_path, denoiser, tokenizer=same).start_id == 27
    with pytest.raises(EnergyMismatchError, match="encodes a probe text differently"):
        make_hf_energy(tmp_path, denoiser, tokenizer=Shifted())


# ----------------------------------------------------------------------------------------------------------
# devices


def device_energy(kind: str, folder):
    """(energy, its model) for each energy kind with a model, on the CPU."""
    if kind == "nce":
        from edlm.energy.nce import NCEEnergy

        torch.manual_seed(0)
        model = build_model(ModelConfig(kind="nce", vocab_size=V, seq_len=L, n_layers=1, hidden=16, n_heads=2,
                                        cond_dim=8)).eval()
        return NCEEnergy(model, chunk_rows=4)
    return Toy(kind, folder).energy("coar", chunk_rows=4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["ar", "hf", "nce"])
def test_energy_model_on_cuda_candidates_on_cpu(tmp_path, kind):
    """Inputs go to the model's device; energies come back on the candidates' device, equal to the CPU ones."""
    sequences = all_sequences(V, L)
    candidates, x_t = sequences[None], torch.tensor([[V, 1, V]])
    log_mu = torch.log_softmax(torch.randn(1, L, V + 1, generator=torch.Generator().manual_seed(0)), -1)
    energy = device_energy(kind, tmp_path)
    on_cpu = energy(candidates, x_t, log_mu)
    energy.model.to("cuda")
    mixed = energy(candidates, x_t, log_mu)
    assert mixed.device.type == "cpu"
    torch.testing.assert_close(mixed, on_cpu, atol=1e-4, rtol=0)
    on_gpu = energy(candidates.cuda(), x_t.cuda(), log_mu.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["ar", "hf", "nce"])
def test_energies_return_float64_on_the_candidates_device(tmp_path, kind):
    """The CPU half of the device contract (the CUDA half is above): shape (B, k), float64, candidates' device."""
    candidates = all_sequences(V, L)[torch.tensor([[0, 5, 9], [26, 4, 2]])]  # (2, 3, L)
    x_t = torch.tensor([[V, 1, V], [V, V, V]])
    energies = device_energy(kind, tmp_path)(candidates, x_t, torch.zeros(2, L, V + 1))
    assert energies.shape == (2, 3) and energies.dtype == torch.float64 and energies.device == candidates.device
    assert bool(torch.isfinite(energies).all())


@pytest.mark.parametrize("kind", ["ar", "hf"])
def test_default_chunks_bound_the_logits_and_change_nothing(tmp_path, kind):
    from edlm.energy.base import LOGIT_BUDGET, rows_per_chunk

    assert rows_per_chunk(None, 1024, 50257) == 5 and rows_per_chunk(7, 1024, 50257) == 7
    assert rows_per_chunk(None, 10 ** 6, 10 ** 6) == 1 and rows_per_chunk(None, L, V) == LOGIT_BUDGET // (L * V)
    candidates = all_sequences(V, L)[None]
    x_t, log_mu = torch.full((1, L), V), torch.zeros(1, L, V + 1)
    toy = Toy(kind, tmp_path / kind)
    torch.testing.assert_close(toy.energy("full", chunk_rows=None)(candidates, x_t, log_mu),
                               toy.energy("full", chunk_rows=1)(candidates, x_t, log_mu), atol=1e-6, rtol=0)
