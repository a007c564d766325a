"""The multi-seed C2AL experiment: paired baseline vs C2AL runs per seed, controls, lambda sweep, report.

Design (paired by seed): for seed s every variant trains from the same seed, so the baseline and
the C2AL model start from identical shared parameters (the aux heads are built last and draw
their initial values after everything else) and read the same batches in the same order. The
per-seed paired difference d_s = NE_diff(variant_s vs baseline_s) is one observation; the
interval is a t-interval over the d_s. Discovery runs once, on baseline seed 0 and the discover
split (valid by default), and every seed and variant uses that same cohort spec; evaluation uses
the eval split (test), which discovery never saw.

Layout under ``out``::

    baseline/seed_<s>/        baseline runs (aux heads off)
    cohorts.json              discovered on baseline seed 0, used by every seed and variant
    c2al/seed_<s>/            C2AL (cohorts.lambda_head / lambda_tail)
    random/seed_<s>/          control: aux labels from random cohorts of the same sizes
    gradsim/seed_<s>/         C2AL with gradient-similarity gating (pipeline.compare_gradsim)
    lambda_<x>/seed_<s>/      lambda sweep (lambda_head = lambda_tail = x; the configured lambda reuses c2al/)
    noeffect/{data,baseline,c2al}/   control: data generated without planted cohort effects
    scores/<variant>/seed_<s>/   each run's predictions (valid and test), scored as soon as it finished training
    eval/<variant>.json       per-variant eval.json (seed-level intervals); eval/selected.json the rule's choice
    eval/selection.json       per seed: every candidate's valid figures and the choice
    summary.json, report.md, forest.png, attention.png

Runs are trained seed by seed (every variant of seed 0, then seed 1...), and a run whose
metrics.json exists is skipped, so an experiment can span several sittings and a partial one
still holds complete pairs. With ``pipeline.concurrent_runs`` > 1 that many runs train at once in
child processes (their console output in ``logs/``), still submitted in seed order.

Selection (``[select]``): the candidates (the baseline, each lambda of ``select.candidates``, and
optionally gradsim and aux-projection widths) are scored on the valid split per seed, against that
seed's baseline with an interval over valid rows; the rule (``SELECTION_RULE``) chooses one per seed,
and the ``selected`` variant reports the chosen runs on the eval split over seeds. Each run is scored
(valid and test) by the worker that trained it, right after training, and the valid figures are
computed as runs finish, so little is left once the last run has trained (``summary["timing"]``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from c2al_rec.analysis.stats import paired_t_interval, power_summary
from c2al_rec.config import SELECTION_RULE, SELECTION_SPLIT, Config, config_to_dict, dump_toml
from c2al_rec.io import atomic_write_json, atomic_write_text
from c2al_rec.io.owned_dir import OwnedDir

from .evaluate import evaluate_tables
from .experiment_report import experiment_report, plot_forest
from .run_pool import RunJob, RunPool, ScoreSpec
from .selection import BASELINE, Candidate, candidate_list, choose, score_valid

ATTENTION_STATS = ("near_zero_fraction", "gini", "entropy_bits", "kurtosis")
# Top-level outputs besides the variants' run directories (the layout above); a new output is added here.
EXPERIMENT_ENTRIES = (
    "experiment.toml", "baseline", "cohorts.json", "noeffect", "eval", "logs", "scores",
    "summary.json", "report.md", "forest.png", "attention.png",
)  # fmt: skip


class Experiment:
    """Seeds x variants of training runs, evaluated against the baseline of the same seed.

    Args:
        cfg: the experiment's run config (data, model, train, [discover], [pipeline], [select]).
        out: output directory.
        seeds: number of seeds (0 .. seeds-1), at least 2.
        command: the command line that started it (recorded in summary.json).
    """

    def __init__(self, cfg: Config, out: Path, seeds: int, command: str = "") -> None:
        if seeds < 2:
            raise ValueError("--seeds must be at least 2 (seed-level intervals need two)")
        self.cfg, self.out, self.seeds, self.command = cfg, Path(out), seeds, command
        self.wall: dict[str, float] = {}
        self.candidates: list[Candidate] = candidate_list(cfg)
        self._valid: dict[int, dict[str, Any]] = {}  # seed -> candidate name -> valid groups
        self._side: dict[tuple[str, str], pa.Table] = {}  # (data root, split) -> label / weight / axis columns
        self._spec: Any = None

    # -------------------------------------------------------------------------------- plan
    def _seeded(self, cfg: Config, seed: int) -> Config:
        return replace(cfg, train=replace(cfg.train, seed=seed))

    def _variant(
        self, spec: Path, lam: Optional[float] = None, random_control: bool = False, weighting: str = "constant"
    ) -> Config:
        c = self.cfg.cohorts
        lam_h, lam_t = (c.lambda_head, c.lambda_tail) if lam is None else (lam, lam)
        cohorts = replace(
            c,
            enabled=True,
            spec=str(spec),
            lambda_head=lam_h,
            lambda_tail=lam_t,
            random_control=random_control,
            weighting=weighting,
        )
        return replace(self.cfg, cohorts=cohorts)

    def _is_configured(self, cand: Candidate) -> bool:
        """A plain lambda candidate at the configured lambda: it is the ``c2al`` variant, not trained twice."""
        c = self.cfg.cohorts
        return (
            cand.weighting == "constant" and cand.aux_projection is None and cand.lam == c.lambda_head == c.lambda_tail
        )

    def variants(self, spec: Path) -> dict[str, Config]:
        """Variant name -> its config (before seeding); the baseline is not a variant."""
        p = self.cfg.pipeline
        out = {"c2al": self._variant(spec)}
        if p.controls:
            out["random"] = self._variant(spec, random_control=True)
        if p.compare_gradsim:
            out["gradsim"] = self._variant(spec, weighting="gradsim")
        for cand in self.candidates:
            if not cand.is_baseline and not self._is_configured(cand):
                out[cand.name] = cand.config(self._variant(spec), str(spec))
        return out

    def candidate_dirs(self) -> dict[str, str]:
        """Candidate name -> run directory name (the baseline's is ``baseline``, the configured lambda's ``c2al``)."""
        return {
            c.name: "c2al" if self._is_configured(c) else (BASELINE if c.is_baseline else c.name)
            for c in self.candidates
        }

    def _lambda_dirs(self) -> dict[str, str]:
        """lambda_<x> result name -> run directory name (the configured lambda reuses c2al/)."""
        return {name: d for name, d in self.candidate_dirs().items() if name.startswith("lambda_")}

    # -------------------------------------------------------------------------------- runs
    def _pool(self) -> RunPool:
        p = self.cfg.pipeline
        return RunPool(p.nproc_per_node, p.concurrent_runs, self.out / "logs")

    def _scores_dir(self, variant: str, seed: int) -> Path:
        return self.out / "scores" / variant / f"seed_{seed}"

    def _job(self, variant: str, seed: int, cfg: Config) -> RunJob:
        run_dir = self.out / variant / f"seed_{seed}"
        cfg = replace(self._seeded(cfg, seed), checkpoint=replace(cfg.checkpoint, resume="auto"))
        eval_split = self.cfg.pipeline.eval_split
        competes = variant in set(self.candidate_dirs().values())
        splits = (SELECTION_SPLIT, eval_split) if competes else (eval_split,)
        score = ScoreSpec(
            str(cfg.data.path),
            splits,
            self._scores_dir(variant, seed),
            attention_split=eval_split if variant in ("baseline", "c2al") else None,
        )
        return RunJob(f"{variant}/seed_{seed}", run_dir, cfg, score)

    def _discover(self, baseline: Path, out: Path) -> None:
        from .discover import discover_cohorts, format_ranking

        if out.is_file():
            return
        print(format_ranking(discover_cohorts(self.cfg.discover, baseline, self.cfg.data.path, out)), flush=True)

    def _noeffect_data(self) -> Optional[Any]:
        """The no-planted-effect control's DataConfig (synthetic data with controls on), else None."""
        if not (self.cfg.pipeline.controls and self.cfg.data.synthetic.rows > 0):
            return None
        syn = replace(self.cfg.data.synthetic, cohort_effects=False)
        return replace(self.cfg.data, path=str(self.out / "noeffect" / "data"), synthetic=syn)

    def run(self) -> dict[str, Any]:
        from c2al_rec.data.sources import ensure_dataset

        # the directory's manifest lists every output before it is written (c2al_rec.io.owned_dir)
        runs = [*self.variants(self.out / "cohorts.json"), *self._lambda_dirs().values()]
        OwnedDir.open(self.out, "experiment", [*EXPERIMENT_ENTRIES, *runs])
        atomic_write_text(self.out / "experiment.toml", dump_toml(self.cfg))
        t0, started = time.perf_counter(), time.time()
        ensure_dataset(self.cfg.data)
        if not (self.out / "cohorts.json").is_file():  # discovery still to run: its axes must exist
            from .discover import check_discover_axes

            check_discover_axes(self.cfg.discover.axes, self.cfg.data.path)
        noeffect = self._noeffect_data()
        if noeffect is not None:
            ensure_dataset(noeffect)
        spec = self.out / "cohorts.json"
        base_cfg = replace(self.cfg, cohorts=replace(self.cfg.cohorts, enabled=False, spec=""))
        pool = self._pool()
        # discovery needs baseline seed 0; the no-effect baseline of seed 0 needs no spec and keeps a
        # second worker busy meanwhile
        first = [self._job("baseline", 0, base_cfg)]
        if noeffect is not None:
            first.append(self._job("noeffect/baseline", 0, replace(base_cfg, data=noeffect)))
        self.wall.update(pool.run(first))
        self._discover(self.out / "baseline" / "seed_0", spec)
        jobs = []
        for s in range(self.seeds):  # seed by seed, so a partial experiment holds complete pairs
            if s > 0:
                jobs.append(self._job("baseline", s, base_cfg))
            jobs += [self._job(name, s, cfg) for name, cfg in self.variants(spec).items()]
            if noeffect is not None:
                if s > 0:
                    jobs.append(self._job("noeffect/baseline", s, replace(base_cfg, data=noeffect)))
                jobs.append(self._job("noeffect/c2al", s, replace(self._variant(spec), data=noeffect)))
        num_runs = len(first) + len(jobs)
        self.wall.update(pool.run(jobs, on_done=self._on_scored))  # selection scoring overlaps training
        summary = self.evaluate(noeffect is not None)
        summary["wall_time_s"] = time.perf_counter() - t0
        summary["run_wall_s"] = self.wall
        summary["score_wall_s"] = pool.score_wall
        summary["timing"] = {
            "wall_s": summary["wall_time_s"],
            "training_done_s": pool.training_done_at - started if pool.training_done_at else None,
            "runs_trained_here": len(self.wall),
            "runs": num_runs,
        }
        write_report(self.out, summary, self.wall)
        atomic_write_json(self.out / "summary.json", summary)
        return summary

    # ---------------------------------------------------------------------------- evaluation
    def _table(self, variant: str, seed: int, split: str, data: Optional[str] = None) -> pa.Table:
        """Predictions of ``variant/seed_<seed>`` on ``split``: its scored ``prob`` beside the split's columns."""
        from c2al_rec.data.dataset import Dataset
        from c2al_rec.runs import side_columns

        data = data or str(self.cfg.data.path)
        if (data, split) not in self._side:
            self._side[(data, split)] = side_columns(Dataset.open(data), split)
        prob = pq.read_table(self._scores_dir(variant, seed) / f"{split}.parquet").column("prob")
        side = self._side[(data, split)]
        if len(prob) != side.num_rows:
            raise ValueError(
                f"{self._scores_dir(variant, seed)}: {len(prob)} scored rows, the split has {side.num_rows}"
            )
        return side.add_column(0, "prob", prob)

    def _load_spec(self) -> Any:
        from c2al_rec.cohorts.spec_file import load_cohort_spec

        if self._spec is None:
            self._spec = load_cohort_spec(self.out / "cohorts.json")
        return self._spec

    def _on_scored(self, job: RunJob) -> None:
        """Score the seed's candidates on valid as soon as they and the seed's baseline are scored."""
        variant, seed_dir = job.name.rsplit("/", 1)
        if variant not in set(self.candidate_dirs().values()) or not (self.out / "cohorts.json").is_file():
            return
        self._valid_of_seed(int(seed_dir.removeprefix("seed_")), required=False)

    def _valid_of_seed(self, seed: int, required: bool = True) -> Optional[dict[str, Any]]:
        """Candidate name -> valid groups (NE_diff vs the seed's baseline, interval over valid rows), computed once."""
        done = self._valid.setdefault(seed, {})
        dirs = self.candidate_dirs()
        ready = lambda d: (self._scores_dir(d, seed) / f"{SELECTION_SPLIT}.parquet").is_file()  # noqa: E731
        if not ready(BASELINE):
            if required:
                raise ValueError(f"baseline/seed_{seed} has no {SELECTION_SPLIT} predictions")
            return None
        todo = {n: d for n, d in dirs.items() if n not in done and (required or ready(d))}
        if todo:
            base = self._table(BASELINE, seed, SELECTION_SPLIT)
            tables = {n: self._table(d, seed, SELECTION_SPLIT) for n, d in todo.items()}
            done.update(score_valid(tables, base, self._load_spec(), self.cfg.pipeline.resamples, seed=seed))
        return done

    def _selection(self) -> dict[str, Any]:
        """The rule applied per seed on valid: ``{"rule", "objective", "forced", "chosen": [name per seed],
        "counts": {name: seeds}, "per_seed": [choose() record per seed]}``."""
        per_seed = []
        for s in range(self.seeds):
            valid = self._valid_of_seed(s)
            assert valid is not None
            record = choose(valid, self.candidates, self.cfg.select.objective, self.cfg.select.force)
            per_seed.append({"seed": s, **{k: v for k, v in record.items() if k != "rule"}})
        chosen = [r["chosen"] for r in per_seed]
        return {
            "rule": SELECTION_RULE,
            "objective": self.cfg.select.objective,
            "forced": self.cfg.select.force != "",
            "split": SELECTION_SPLIT,
            "chosen": chosen,
            "counts": {c.name: chosen.count(c.name) for c in self.candidates},
            "per_seed": per_seed,
        }

    def evaluate(self, with_noeffect: bool) -> dict[str, Any]:
        """Evaluate every variant against the baselines of the same seeds; write eval/, selection/, plots."""
        spec = self._load_spec()
        split, resamples = self.cfg.pipeline.eval_split, self.cfg.pipeline.resamples
        seeds = range(self.seeds)
        sensitive = any(a.sensitive and a.name == spec.axis for a in self._schema().axes)
        bases = [self._table(BASELINE, s, split) for s in seeds]
        dirs = {name: name for name in self.variants(self.out / "cohorts.json") if name not in self.candidate_dirs()}
        dirs.update({n: d for n, d in self.candidate_dirs().items() if n != BASELINE})
        evals: dict[str, Any] = {}
        for name, directory in dirs.items():
            models = [self._table(directory, s, split) for s in seeds]
            evals[name] = evaluate_tables(models, bases, spec, resamples, sensitive)
        selection = self._selection()
        cand_dirs = self.candidate_dirs()
        chosen = [self._table(cand_dirs[c], s, split) for s, c in zip(seeds, selection["chosen"])]
        evals["selected"] = evaluate_tables(chosen, bases, spec, resamples, sensitive)
        if with_noeffect:
            data = str(self.out / "noeffect" / "data")
            evals["noeffect"] = evaluate_tables(
                [self._table("noeffect/c2al", s, split, data) for s in seeds],
                [self._table("noeffect/baseline", s, split, data) for s in seeds],
                spec,
                resamples,
                sensitive,
            )
        for name, res in evals.items():
            res["split"] = split
            atomic_write_json(self.out / "eval" / f"{name}.json", res)
        atomic_write_json(self.out / "eval" / "selection.json", selection)
        results = {name: res["groups"] for name, res in evals.items()}
        if "random" in results:
            results["c2al_minus_random"] = paired_difference(results["c2al"], results["random"])
        power = {
            name: {g: power_summary(r["ne_diff_seeds"]) for g, r in groups.items() if r.get("ne_diff_seeds")}
            for name, groups in results.items()
        }
        return {
            "results": results,
            "selection": selection,
            "power": power,
            "attention": self._attention(),
            "spec": spec.to_json(),
            "seeds": self.seeds,
            "config": config_to_dict(self.cfg),
            "command": self.command,
        }

    def _schema(self) -> Any:
        from c2al_rec.data.schema import load_schema

        return load_schema(self.cfg.data.path)

    def _attention(self) -> dict[str, Any]:
        """FM attention statistics per seed for baseline and c2al (scored beside training), means and intervals."""
        import json

        from c2al_rec.analysis.attention import plot_attention_comparison

        per_seed: dict[str, list[dict[str, Any]]] = {"baseline": [], "c2al": []}
        for name in per_seed:
            for s in range(self.seeds):
                per_seed[name].append(json.loads((self._scores_dir(name, s) / "attention.json").read_text()))
        plot_attention_comparison(
            {name: stats[0] for name, stats in per_seed.items()}, self.out / "attention.png", "FM attention, seed 0"
        )
        return summarize_attention(per_seed)


def write_report(out: Path, summary: dict[str, Any], wall: dict[str, float]) -> None:
    """``out/forest.png`` and ``out/report.md`` from an experiment's summary (and the run wall times)."""
    plot_forest(summary["results"], out / "forest.png", f"{summary['seeds']} seeds, axis {summary['spec']['axis']}")
    atomic_write_text(out / "report.md", experiment_report(summary, wall))


def paired_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Per group, variant a minus variant b, paired by seed: d_s = NE_diff_a,s - NE_diff_b,s (both against
    the baseline of seed s), with a t-interval over seeds. ``ne_seeds`` are a's per-seed NE."""
    out = {}
    for group, ga in a.items():
        gb = b.get(group, {})
        if not ga.get("ne_diff_seeds") or not gb.get("ne_diff_seeds"):
            continue
        d = np.array(ga["ne_diff_seeds"]) - np.array(gb["ne_diff_seeds"])
        iv = paired_t_interval(d)
        out[group] = {
            "ne_diff": iv.ne_diff,
            "ci95": list(iv.ci95),
            "ci_kind": iv.ci_kind,
            "p_value": iv.p_value,
            "ne_seeds": ga.get("ne_seeds"),
            "ne_other_seeds": gb.get("ne_seeds"),
            "ne_diff_seeds": d.tolist(),
        }
    return out


def summarize_attention(per_seed: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """``{run: [{module: weight_stats}] per seed}`` -> per run and module: mean and 95% t-interval over
    seeds of each statistic, plus the paired c2al - baseline difference."""

    def interval(values: list[float]) -> dict[str, Any]:
        v = np.asarray(values, dtype=np.float64)
        if len(v) < 2:
            return {"mean": float(v.mean()), "ci95": None, "seeds": v.tolist()}
        iv = paired_t_interval(v)
        return {"mean": iv.ne_diff, "ci95": list(iv.ci95), "seeds": v.tolist()}

    out: dict[str, Any] = {}
    for run, seeds in per_seed.items():
        out[run] = {
            module: {stat: interval([s[module][stat] for s in seeds]) for stat in ATTENTION_STATS}
            for module in seeds[0]
        }
    if "baseline" in per_seed and "c2al" in per_seed:
        base, c2al = per_seed["baseline"], per_seed["c2al"]
        out["c2al_minus_baseline"] = {
            module: {
                stat: interval([c[module][stat] - b[module][stat] for c, b in zip(c2al, base)])
                for stat in ATTENTION_STATS
            }
            for module in base[0]
        }
    return out


def record_results(out: Path, dest: Path, name: str) -> list[Path]:
    """Copy an experiment's summary (as ``experiment_<name>.json``), report and plots into ``dest``
    (e.g. ``benchmarks/results``), with the machine recorded beside the command."""
    import json
    import shutil

    from c2al_rec.io import relative_paths
    from c2al_rec.runs.provenance import machine_summary

    summary = json.loads((out / "summary.json").read_text())
    summary["machine"] = machine_summary()
    provenance = out / "baseline" / "seed_0" / "provenance.json"  # the code the runs were trained with
    summary["trained_at_commit"] = json.loads(provenance.read_text())["git_commit"] if provenance.is_file() else None
    summary = relative_paths(summary, Path.cwd())  # recorded from the repository root: repo-relative paths
    written = [dest / f"experiment_{name}.json"]
    atomic_write_json(written[0], summary)
    report = (out / "report.md").read_text().rstrip("\n") + "\n"
    m = summary["machine"]
    report += (
        f"\nMachine: {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}; trained at commit "
        f"{summary['trained_at_commit']}; wall time of "
        f"the experiment {summary.get('wall_time_s', float('nan')) / 60:.1f} min (training, discovery, evaluation)."
        "\n"
    )
    for png in ("forest", "attention"):
        if (out / f"{png}.png").is_file():
            target = dest / f"experiment_{name}_{png}.png"
            shutil.copyfile(out / f"{png}.png", target)
            report = report.replace(f"({png}.png)", f"({target.name})")
            written.append(target)
    atomic_write_text(dest / f"experiment_{name}.md", report)
    return written + [dest / f"experiment_{name}.md"]
