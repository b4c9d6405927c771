"""ReMDM: the masked-diffusion step that may remask revealed tokens (Wang et al. 2025; docs/method.md §2).

MDLM never changes a token once revealed. ReMDM's reverse step t -> s sends a sampler-revealed token back to
[MASK] with probability sigma_t and reveals masked positions more often to compensate, so that a position is
still visible with the forward probability alpha_s (ReMDM eq. for q_sigma(z_s | z_t, x)):

    x_t visible (revealed by the sampler):  x_s = [MASK] with probability sigma_t, else x_t
    x_t masked:                             x_s = x0_i with probability
                                                  (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t), else [MASK]

    0 <= sigma_t <= sigma_t^max = min(1, (1 - alpha_s) / alpha_t)    (keeps the reveal probability <= 1)

Check: P(visible at s) = alpha_t (1 - sigma_t) + (alpha_s - (1 - sigma_t) alpha_t) = alpha_s, whatever sigma_t.
With sigma_t = 0 this is the MDLM ancestral step (``ancestral.AncestralStep``), bit for bit: same random stream,
and the reveal probability is computed as MDLM's plus sigma_t alpha_t / (1 - alpha_t), which adds exactly 0.0.
Prompt and infill positions (visible when the row starts, t = 1) are never remasked.

Schedules for sigma_t (``remask``; eta >= 0 is the strength). The names mean the formulas of ReMDM's code
(kuleshov-group/remdm, ``_ddpm_caching_update``); ``conf-cap`` is edlm's own:

- ``cap``:      sigma_t = min(eta, sigma_t^max)
- ``rescale``:  sigma_t = eta * sigma_t^max  (eta <= 1)
- ``conf``:     sigma_t^(l) = eta_conf^(l) * sigma_t^max, eta_conf = softmax over the sampler-revealed positions l
                of -psi^(l), psi^(l) the probability the denoiser gave position l's token when it was revealed
                (least confident remasked first); eta is not used. Masked positions keep MDLM's reveal
                probability (sigma = 0 for them, as in ReMDM's code), so the visible fraction is alpha_s only
                approximately: on average at most sigma_t^max tokens per row and step go back.
- ``conf-cap``: as ``conf`` with min(eta, sigma_t^max) in place of sigma_t^max, so that eta = 0 is MDLM (edlm's
                variant; ReMDM's paper writes eta_conf^(l) sigma_t without fixing sigma_t).
- ``loop``:     three phases on the grid time tau (ReMDM-loop, knobs t_on, t_off, alpha_on):
                tau > t_on: MDLM (sigma = 0) with the schedule time mapped linearly so that alpha reaches alpha_on
                at t_on; t_off < tau <= t_on: alpha held at alpha_on (alpha_s = alpha_t, so the step reveals
                sigma alpha / (1 - alpha) of the masked and remasks sigma of the revealed: as many as it reveals,
                on average) with sigma = min(eta, sigma^max) (ReMDM's code uses eta, the same wherever eta is a
                valid probability); tau <= t_off: MDLM from alpha_on to 1. A step is in the loop phase when its
                start tau_t is (the phase boundaries of ReMDM's code). The clock is mapped piecewise linearly
                (``loop_time``), so the step that crosses t_on ends exactly at alpha_on, where ReMDM's code computes
                both ends of that step with the pre-loop formula and overshoots alpha_on by up to one step. With
                eta = 0 it is MDLM on the mapped clock.

Every position to reveal or remask is decided before x0 is drawn (``plan``), so reveal-set importance sampling
weighs the revealed tokens. The x0 draw (and so importance sampling's window) sees the schedule time (for
``loop``: the mapped one); a time-conditioned denoiser is fed the grid time by the loop. The loop stops once no row
has a masked position, where ReMDM would go on remasking: this truncation matters only when every row is complete
before the last step.

Random stream per step: x0's uniforms, then one (B, L) float64 uniform; a position uses it to be revealed if
masked, or to be remasked if revealed (the sets are disjoint, so the draws stay independent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from edlm.config import raise_first_error
from edlm.diffusion.posterior import reveal_probability
from edlm.diffusion.schedule import LogLinearSchedule
from edlm.sampling.base import GridStep, Plan, write_plan
from edlm.sampling.registry import SamplerSpec, register

REMASKS = ("cap", "rescale", "conf", "conf-cap", "loop")


@dataclass(frozen=True)
class RemdmOptions:
    remask: Literal["cap", "rescale", "conf", "conf-cap", "loop"] = field(default="cap", metadata={
        "help": "remasking probability sigma_t, ReMDM's schedules: min(eta, sigma_max) (cap), eta * sigma_max "
                "(rescale), sigma_max shared by softmax(-confidence) over the revealed tokens (conf; eta unused), "
                "or cap inside (remask-off, remask-on] with alpha held fixed and plain MDLM outside (loop); "
                "conf-cap is edlm's conf with min(eta, sigma_max), so eta = 0 is MDLM"})
    eta: float = field(default=0.02, metadata={"help": "remasking strength in [0, 1] (0 = plain MDLM)"})
    remask_on: float = field(default=0.55, metadata={
        "help": "loop: grid time t_on where the loop phase (alpha held, remasking) starts"})
    remask_off: float = field(default=0.05, metadata={
        "help": "loop: grid time t_off where the loop phase ends (then MDLM reveals the rest)"})
    remask_alpha_on: float = field(default=0.9, metadata={
        "help": "loop: fraction of tokens revealed (alpha) held during the loop phase"})

    def __post_init__(self):
        raise_first_error(self, [
            (0.0 <= self.eta <= 1.0, "eta", "must be in [0, 1]"),
            (0.0 < self.remask_off < self.remask_on < 1.0, "remask_off", "and remask_on need "
                                                                          "0 < remask_off < remask_on < 1"),
            (0.0 < self.remask_alpha_on < 1.0, "remask_alpha_on", "must be in (0, 1)"),
        ])


def max_remask_probability(alpha_t: torch.Tensor, alpha_s: torch.Tensor) -> torch.Tensor:
    """sigma_t^max = min(1, (1 - alpha_s) / alpha_t); alpha_t, alpha_s (B,) float64 -> (B,) float64."""
    return torch.clamp((1.0 - alpha_s) / alpha_t, max=1.0)


def loop_time(tau: torch.Tensor, t_on: float, t_off: float, t_held: float) -> torch.Tensor:
    """ReMDM-loop's clock: grid time tau (B,) float64 -> schedule time (B,) float64.

    Piecewise linear through (1, 1), (t_on, t_held), (t_off, t_held), (0, 0): ``t_held`` is the schedule time
    whose alpha is alpha_on, held for t_off <= tau <= t_on."""
    before = t_held + (tau - t_on) * (1.0 - t_held) / (1.0 - t_on)
    after = tau * (t_held / t_off)
    return torch.where(tau > t_on, before, torch.where(tau >= t_off, torch.full_like(tau, t_held), after))


@dataclass
class RemaskingStep(GridStep):
    schedule: LogLinearSchedule
    mask_id: int
    remask: str = "cap"
    eta: float = 0.02
    t_on: float = 0.55
    t_off: float = 0.05
    alpha_on: float = 0.9
    # per-row state, reset for every row that starts (t = 1): prompt/infill positions, and psi for conf
    fixed: torch.Tensor | None = field(default=None, init=False, repr=False)  # (B, L) bool
    confidence: torch.Tensor | None = field(default=None, init=False, repr=False)  # (B, L) float64

    def __post_init__(self):
        if self.remask not in REMASKS:
            raise ValueError(f"unknown remask schedule {self.remask!r} (valid: {', '.join(REMASKS)})")

    def proposal_time(self, x_t, t):
        return self.schedule_times(t, t)[0]

    def schedule_times(self, t: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid times (B,) -> schedule times (B,): the identity except for ``loop``."""
        if self.remask != "loop":
            return t, s
        t_held = (1.0 - self.alpha_on) / (1.0 - self.schedule.eps)  # log-linear: alpha(t_held) = alpha_on
        return (loop_time(t, self.t_on, self.t_off, t_held), loop_time(s, self.t_on, self.t_off, t_held))

    def remask_probability(self, alpha_t: torch.Tensor, alpha_s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """sigma_t (B,) float64 of the schedule (for conf: the budget shared among the revealed positions)."""
        sigma_max = max_remask_probability(alpha_t, alpha_s)
        if self.remask == "rescale":
            return self.eta * sigma_max
        if self.remask == "conf":
            return sigma_max
        sigma = torch.clamp(sigma_max, max=self.eta)
        if self.remask == "loop":
            return torch.where((t <= self.t_on) & (t > self.t_off), sigma, torch.zeros_like(sigma))
        return sigma

    def _start_rows(self, x_t: torch.Tensor, t: torch.Tensor) -> None:
        """Rows at t = 1 (the loop starts every row there) record their fixed positions afresh."""
        visible = x_t != self.mask_id
        if self.fixed is None or self.fixed.shape != x_t.shape or self.fixed.device != x_t.device:
            self.fixed = visible
            self.confidence = torch.zeros(x_t.shape, dtype=torch.float64, device=x_t.device)
            return
        self.fixed = torch.where((t == 1.0)[:, None], visible, self.fixed)

    def plan(self, log_probs, x_t, t, s, generator) -> Plan:
        self._start_rows(x_t, t)
        t_eff, s_eff = self.schedule_times(t, s)
        uniforms = torch.rand(x_t.shape, generator=generator, dtype=torch.float64, device=x_t.device)  # (B, L)
        alpha_t, alpha_s = self.schedule.alpha(t_eff), self.schedule.alpha(s_eff)  # (B,)
        sigma = self.remask_probability(alpha_t, alpha_s, t)  # (B,)
        masked = x_t == self.mask_id  # (B, L)
        revealed = ~masked & ~self.fixed  # (B, L) the positions that may go back to [MASK]
        if self.remask.startswith("conf"):
            scores = (-self.confidence).masked_fill(~revealed, float("-inf"))
            weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # (B, L); rows with nothing revealed -> 0
            remask_p = weights * sigma[:, None]  # (B, L)
            extra = torch.zeros_like(sigma)
        else:
            remask_p = sigma[:, None]  # (B, 1)
            extra = sigma * alpha_t / (1.0 - alpha_t)
        reveal_p = reveal_probability(self.schedule, t_eff, s_eff)[:, None] + extra[:, None]  # (B, 1)
        return Plan(masked & (uniforms < reveal_p), revealed & (uniforms < remask_p), extra={"log_probs": log_probs})

    def apply(self, x_t, x0, plan, t, s, generator):
        if self.remask.startswith("conf"):  # psi of each newly revealed token: its probability under the denoiser
            picked = plan.extra["log_probs"].double().gather(-1, x0.unsqueeze(-1)).squeeze(-1).exp()  # (B, L)
            self.confidence = torch.where(plan.reveal, picked, self.confidence)
        return write_plan(x_t, x0, plan, self.mask_id, s)


register(SamplerSpec("remdm", "ReMDM: may remask revealed tokens (--remask)", RemdmOptions,
                     lambda schedule, mask_id, o, sample: RemaskingStep(
                         schedule, mask_id, o.remask, o.eta, o.remask_on, o.remask_off, o.remask_alpha_on)))
