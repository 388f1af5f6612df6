"""The label-efficiency sweep: nnU-Net fine-tuning on few-label folds for each export and a scratch baseline, then
mean Dice vs number of labelled cases (Kats et al. 2024, arXiv 2401.06473, Fig. 1) from the `summary.json` nnU-Net
writes for each fold.

`sweep_commands` lists the `nnUNetv2_train` calls (one per plans × fold, the baseline with the target's own plans);
`run_logged` runs one of them with its whole output (stdout and stderr) streamed to a log file per run;
`collect` reads each fold's `validation/summary.json` (nnU-Net's `foreground_mean` Dice over the fold's fixed
validation cases) into rows; `write_outputs` writes `label_efficiency.csv` and `label_efficiency.png` (mean ± sd over
repeats, one line per method).
"""
from __future__ import annotations

import collections
import csv
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from nnssl_plugin.evidence import mean_sd
from nnssl_plugin.trainer_names import fold_folder, run_folder, run_log


@dataclass(frozen=True)
class Run:
    method: str  # the export's method label (plans name without nnsslPlans_) or "scratch"
    plans: str
    trainer: str
    fold: int
    n: int
    repeat: int

    def command(self, dataset: str, configuration: str) -> list[str]:
        return ["nnUNetv2_train", dataset, configuration, str(self.fold), "-tr", self.trainer, "-p", self.plans]

    def fold_folder(self, results: Path, dataset_name: str, configuration: str) -> Path:
        return results / dataset_name / run_folder(self.trainer, self.plans, configuration) / fold_folder(self.fold)

    def log_path(self, folder: Path, configuration: str) -> Path:
        """This run's log in the sweep's output folder: `logs/<trainer>__<plans>__<configuration>__fold_<f>.log`."""
        return folder / "logs" / run_log(self.trainer, self.plans, configuration, self.fold)


def run_logged(argv: list[str], env: dict[str, str], log_path: Path, echo: TextIO | None = None
               ) -> tuple[int, str, float]:
    """Run `argv` with stdout and stderr merged and streamed line by line into `log_path` (appended after a header
    naming the command, so a rerun keeps the failed attempt's log), and into `echo` too when given. Returns the exit
    code, the last non-empty output line (a failure's exception message) and the seconds it took."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    last = collections.deque(maxlen=1)
    start = time.monotonic()
    with open(log_path, "a") as log:
        log.write(f"==> {time.strftime('%Y-%m-%d %H:%M:%S')} {subprocess.list2cmdline(argv)}\n")
        log.flush()
        with subprocess.Popen(argv, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1) as process:
            for line in process.stdout:
                log.write(line)
                if echo is not None:
                    echo.write(line)
                    echo.flush()
                if line.strip():
                    last.append(line.strip())
        log.write(f"<== exit code {process.returncode}\n")
    return process.returncode, (last[0] if last else ""), time.monotonic() - start


def method_label(plans: str) -> str:
    return plans[len("nnsslPlans_"):] if plans.startswith("nnsslPlans_") else plans


def sweep_runs(folds: list[dict], plans: list[str], trainer: str, baseline: str | None, baseline_trainer: str,
               target_plans: str) -> list[Run]:
    runs = [Run(method_label(p), p, trainer, f["fold"], f["n"], f["repeat"]) for p in plans for f in folds]
    if baseline == "scratch":
        runs += [Run("scratch", target_plans, baseline_trainer, f["fold"], f["n"], f["repeat"]) for f in folds]
    return runs


@dataclass
class Row:
    method: str
    n: int
    repeat: int
    fold: int
    mean_dice: float
    trainer: str
    plans: str
    summary: str


def collect(runs: list[Run], results: Path, dataset_name: str, configuration: str) -> tuple[list[Row], list[Run]]:
    """Rows of the runs that have a summary.json; the runs that do not (not trained or still running)."""
    from nnssl_plugin.io_utils import load_json

    rows, missing = [], []
    for run in runs:
        summary = run.fold_folder(results, dataset_name, configuration) / "validation" / "summary.json"
        if not summary.is_file():
            missing.append(run)
            continue
        dice = float(load_json(summary)["foreground_mean"]["Dice"])
        rows.append(Row(run.method, run.n, run.repeat, run.fold, dice, run.trainer, run.plans, str(summary)))
    return rows, missing


def write_outputs(rows: list[Row], folder: Path, title: str) -> tuple[Path, Path]:
    from nnssl_plugin.io_utils import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = folder / "label_efficiency.csv", folder / "label_efficiency.png"
    fields = list(Row.__dataclass_fields__)

    def write_csv(f):
        import io

        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
        f.write(text.getvalue().encode())

    atomic_write(csv_path, write_csv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for method in dict.fromkeys(r.method for r in rows):
        ns = sorted({r.n for r in rows if r.method == method})
        values = [[r.mean_dice for r in rows if r.method == method and r.n == n] for n in ns]
        sds = [mean_sd(v)[1] if len(v) > 1 else 0.0 for v in values]  # sample sd, as in every other table
        counts = sorted({len(v) for v in values})
        repeats = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        ax.errorbar(ns, [np.mean(v) for v in values], yerr=sds, marker="o", capsize=4,
                    label=f"{method} (mean ± sd of {repeats} repeat{'s' if counts[-1] > 1 else ''})")
    ax.set_xscale("log", base=2)
    all_ns = sorted({r.n for r in rows})
    ax.set_xticks(all_ns, [str(n) for n in all_ns])  # the swept N themselves, not powers of 2
    ax.minorticks_off()
    ax.set_xlabel("labelled training cases")
    ax.set_ylabel("mean foreground Dice (nnU-Net summary.json)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return csv_path, png_path
