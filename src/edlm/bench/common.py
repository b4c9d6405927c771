"""Shared benchmark plumbing: output folders, environment record, markdown tables, matmul peak, and the 95%
intervals of repeated timings (t-interval of a mean, Welch and paired intervals of a ratio)."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def environment(device: torch.device | str | None = None) -> dict:
    """Where a benchmark ran: torch version, threads, CPU, and the GPU (name, CUDA version) when one is used."""
    record = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
              "processor": platform.processor() or platform.uname().machine,
              "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        record.update(device_name=torch.cuda.get_device_name(device), cuda_version=torch.version.cuda)
    else:
        record["device_name"] = f"cpu ({record['threads']} threads)"
    return record


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work (timings on CUDA must bracket it); a no-op on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def write_results(out: Path, name: str, payload: dict, table: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2))
    (out / f"{name}.md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {out / (name + '.json')} and {out / (name + '.md')}")


def markdown_table(rows: list[dict], columns: list[str], formats: dict[str, str] | None = None) -> str:
    formats = formats or {}
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            if isinstance(value, float) and column in formats:
                value = format(value, formats[column])
            elif isinstance(value, float):
                value = f"{value:.4g}"
            cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def matmul_peak(dtype: torch.dtype, device: torch.device | str = "cpu", size: int = 2048,
                seconds: float = 2.0) -> float:
    """Measured dense matmul rate in FLOP/s (best of repeated runs): the physical limit we compare to."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(2):
        a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        synchronize(device)
        best = max(best, 4 * 2 * size ** 3 / (time.perf_counter() - start))
    return best


# --- 95% intervals for timings -------------------------------------------------------------------------------
# Timings are repeated a few times (blocks of steps, repeats of a sampling run), so the intervals are Student t
# intervals on a handful of values, not bootstrap ones (evaluation.stats bootstraps over many samples). Ratios of
# rates or times are taken on the log scale, where a ratio is a difference, and exponentiated back.


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval [low, high] (for a ratio: low <= 1 <= high means no difference)."""

    value: float
    low: float
    high: float

    def contains(self, point: float) -> bool:
        return self.low <= point <= self.high

    def scaled(self, factor: float) -> "Estimate":
        """The same interval in other units (a positive constant factor, e.g. FLOPs per token / peak)."""
        return Estimate(self.value * factor, self.low * factor, self.high * factor)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for 0 <= x <= 1 and a, b > 0."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom (any real df: Welch's are fractional)."""
    tail = 0.5 * regularized_beta(df / (df + t * t), 0.5 * df, 0.5)  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (0 < p < 1), by bisection on the CDF to float precision."""
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        low, high = (middle, high) if student_t_cdf(middle, df) < p else (low, middle)
    return 0.5 * (low + high)


def t_interval(values) -> Estimate:
    """Mean of ``values`` (n >= 2 floats) with its 95% t-interval: mean +- t(0.975, n - 1) * sd / sqrt(n)."""
    values = [float(v) for v in values]
    n = len(values)
    if n < 2:
        raise ValueError(f"a t-interval needs at least 2 values, got {n}")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half)


def geometric_interval(values) -> Estimate:
    """Geometric mean of positive ``values`` (n >= 2: rates or times) with the exponentiated 95% t-interval of
    the mean log: the interval of a positive quantity stays positive, and it matches the log-scale ratios."""
    logs = t_interval([math.log(float(v)) for v in values])
    return Estimate(math.exp(logs.value), math.exp(logs.low), math.exp(logs.high))


def welch_ratio(numerator, denominator) -> Estimate:
    """Ratio of two independent sets of positive rates, exp(mean log numerator - mean log denominator), with its
    95% Welch interval: the difference of mean logs +- t(0.975, df) * sqrt(s_a^2 / n_a + s_b^2 / n_b), df from
    Welch-Satterthwaite, exponentiated. Each set needs n >= 2 values."""
    logs_a, logs_b = [math.log(v) for v in numerator], [math.log(v) for v in denominator]
    if min(len(logs_a), len(logs_b)) < 2:
        raise ValueError(f"a Welch interval needs at least 2 values per side, got {len(logs_a)} and {len(logs_b)}")
    a, b = t_interval(logs_a), t_interval(logs_b)
    var_a = sum((v - a.value) ** 2 for v in logs_a) / (len(logs_a) - 1) / len(logs_a)  # squared standard errors
    var_b = sum((v - b.value) ** 2 for v in logs_b) / (len(logs_b) - 1) / len(logs_b)
    difference = a.value - b.value
    if var_a + var_b == 0.0:
        return Estimate(math.exp(difference), math.exp(difference), math.exp(difference))
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (len(logs_a) - 1) + var_b ** 2 / (len(logs_b) - 1))
    half = student_t_quantile(0.975, df) * math.sqrt(var_a + var_b)
    return Estimate(math.exp(difference), math.exp(difference - half), math.exp(difference + half))


def paired_ratio(numerator, denominator) -> Estimate:
    """Ratio of paired positive values (pair r measured back to back): exp(mean_r log(numerator_r /
    denominator_r)) with the exponentiated 95% t-interval of the mean log ratio (n - 1 df)."""
    if len(numerator) != len(denominator):
        raise ValueError(f"a paired ratio needs equal counts, got {len(numerator)} and {len(denominator)}")
    logs = t_interval([math.log(a / b) for a, b in zip(numerator, denominator)])
    return Estimate(math.exp(logs.value), math.exp(logs.low), math.exp(logs.high))


def format_interval(estimate: Estimate, spec: str) -> str:
    """'459,608 (452,100..467,300)' for spec ',.0f': the value, then its 95% interval."""
    return f"{estimate.value:{spec}} ({estimate.low:{spec}}..{estimate.high:{spec}})"


def format_ratio(estimate: Estimate) -> str:
    """'2.04x (1.98..2.10)', or 'no significant difference (0.97..1.02x)' when the interval contains 1."""
    if estimate.contains(1.0):
        return f"no significant difference ({estimate.low:.2f}..{estimate.high:.2f}x)"
    return f"{estimate.value:.2f}x ({estimate.low:.2f}..{estimate.high:.2f})"


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is missing (plots are optional:
    every figure's numbers are in the JSON and markdown too)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def interval_plot(labels: list[str], estimates: list[Estimate | None], path: Path, xlabel: str,
                  title: str) -> list[str]:
    """A point per label with its 95% interval as a whisker (a point without an interval has none), on a log
    axis: the intervals are multiplicative, and a few repeats can give a long upper whisker. Returns [path], or
    [] when matplotlib is missing (the JSON and markdown carry the same numbers)."""
    plt = pyplot()
    if plt is None:
        return []
    values = [e.value if e else float("nan") for e in estimates]
    errors = [[e.value - e.low if e else 0.0 for e in estimates], [e.high - e.value if e else 0.0 for e in estimates]]
    fig, axis = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.4))
    positions = list(range(len(labels)))[::-1]  # first label on top
    axis.errorbar(values, positions, xerr=errors, fmt="o", color="#4c72b0", ecolor="black", capsize=3)
    axis.set_xscale("log")
    axis.set_yticks(positions, labels, fontsize=8)
    axis.set_ylim(-0.7, len(labels) - 0.3)
    axis.set_xlabel(xlabel + ", log scale")
    axis.set_title(title, fontsize=10)
    axis.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]


class HostSyncCounter(TorchDispatchMode):
    """Counts, while active, the operations that make the host wait for the device on a GPU: reading a value
    (``.item()``, ``if tensor``: ``_local_scalar_dense``/``is_nonzero``), ``nonzero``, and indexing or assigning
    with a boolean mask (its size must reach the host). A dispatch mode sees each op on any device, so the count
    is the same on a CPU as it would be on CUDA. ``counts``: {op: calls}.

        with HostSyncCounter() as syncs:
            generate(...)
        syncs.total
    """

    VALUE_OPS = ("aten._local_scalar_dense", "aten.is_nonzero", "aten.nonzero", "aten.masked_select")
    MASK_OPS = ("aten.index", "aten.index_put_", "aten.index_put")

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in self.VALUE_OPS:
            self.counts[name] += 1
        elif name in self.MASK_OPS and len(args) > 1 and any(
                isinstance(index, torch.Tensor) and index.dtype == torch.bool for index in args[1] or []):
            self.counts[f"{name} (boolean mask)"] += 1
        return func(*args, **(kwargs or {}))
