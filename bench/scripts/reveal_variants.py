"""Exploratory variants of reveal-set weighting (not in edlm's options), exact models, T = 32, k = 16, 128 rows,
paired bootstrap against one plain fill. Rerun: python bench/scripts/reveal_variants.py (about a minute on 2 cores). The
variants are research notes, not edlm options (README, "Where the importance weights look")."""
import math, time, torch, numpy as np
from edlm.law import make_law
from edlm.energy.base import EnergyAbilities, candidate_log_mu
from edlm.sampling.loop import MaskedDiffusionSampler
from edlm.sampling.importance import ImportanceSampler
from edlm.diffusion.schedule import LogLinearSchedule
from edlm.diffusion.categorical import inverse_cdf
from edlm.stats import bootstrap_indices, percentile_interval, verdict
torch.set_num_threads(2)
law = make_law("markov", 27, 3, 0, order=1)
V, L, B, T, k = 27, 128, 128, 32, 16
den = law.denoiser(0.0)
class LE(EnergyAbilities):
    exact_marginals = True
    def __call__(s, c, x_t, lp):
        b, kk, l = c.shape
        return -law.log_prob(c.reshape(b*kk, l), 1e-3).view(b, kk) + candidate_log_mu(c, x_t, lp, V)
    def subset_log_prob(s, x, vis, sub): return law.subset_log_prob(x, vis, sub, 1e-3)
class Joint(ImportanceSampler):  # the biased sketch: average the fills' joint probability (adds log q(fill))
    def reveal_log_weights(self, c, f, x_t, log_q, reveal, mask_id):
        n, kk, l = c.shape; M = f.shape[1]
        joined = torch.where(reveal[:, None, None, :], c[:, :, None, :], f[:, None, :, :])
        E = self.energy(joined.reshape(n, kk * M, l), x_t, log_q).double().view(n, kk, M)
        other = (x_t == mask_id) & ~reveal
        lqF = (log_q.double().gather(-1, f.transpose(1, 2)).transpose(1, 2) * other[:, None]).sum(-1)
        return torch.logsumexp(-E + lqF[:, None, :], -1) - math.log(M)
G = torch.Generator().manual_seed(7)
class Rollout(ImportanceSampler):  # fills by a 2-sub-step denoiser rollout, weighted by the rollout's path probability
    S = 2
    def reveal_log_weights(self, c, f, x_t, log_q, reveal, mask_id):
        n, kk, l = c.shape; M = self.fills
        state = torch.where(reveal[:, None, :], c, x_t[:, None, :])[:, :, None, :].expand(n, kk, M, l).reshape(-1, l).clone()
        log_path = torch.zeros(state.shape[0], dtype=torch.float64)
        for step in range(self.S):
            lp = den(state).double(); masked = state == V
            rev = masked & (torch.rand(state.shape, generator=G, dtype=torch.float64) < 1.0 / (self.S - step))
            tok = inverse_cdf(lp.exp(), torch.rand(state.shape + (1,), generator=G, dtype=torch.float64))[..., 0]
            log_path += (lp.gather(-1, tok[..., None])[..., 0] * rev).sum(-1)
            state = torch.where(rev, tok, state)
        E = self.energy(state.view(n, kk * M, l), x_t, log_q).double().view(n, kk, M)
        other = ((x_t == mask_id) & ~reveal)[:, None, :].expand(n, kk * M, l).reshape(-1, l)
        lqF = (log_q.double().repeat_interleave(kk * M, 0).gather(-1, state[..., None])[..., 0] * other).sum(-1)
        return torch.logsumexp(-E + (lqF - log_path).view(n, kk, M), -1) - math.log(M)
sched, counts = LogLinearSchedule(1e-3), {}
for name, imp in (("reveal, 1 fill", ImportanceSampler(LE(), k, 1.0, 1.0, "reveal", 1)),
                  ("reveal, 4 fills", ImportanceSampler(LE(), k, 1.0, 1.0, "reveal", 4)),
                  ("joint average, 4 fills (biased)", Joint(LE(), k, 1.0, 1.0, "reveal", 4)),
                  ("joint average, 16 fills (biased)", Joint(LE(), k, 1.0, 1.0, "reveal", 16)),
                  ("rollout fills, 2 sub-steps, 1 fill", Rollout(LE(), k, 1.0, 1.0, "reveal", 1))):
    started = time.time()
    out = MaskedDiffusionSampler(den, sched, V, T, importance=imp).sample(torch.full((B, L), V), torch.Generator().manual_seed(1))
    counts[name] = law.forbidden(out.tokens).sum(-1).double().numpy()
    print(f"{name}: {100 * counts[name].sum() / (B * L):.2f}% forbidden, {time.time() - started:.0f} s", flush=True)
idx, base = bootstrap_indices(B, 2000, 0), counts["reveal, 1 fill"]
for name, c in counts.items():
    if name != "reveal, 1 fill":
        iv = percentile_interval(c.sum() / base.sum() - 1, c[idx].sum(1) / base[idx].sum(1) - 1)
        print(f"{name} against one fill: {verdict(iv)}")
