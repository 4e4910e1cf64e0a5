"""Blind human evaluation of runs: policy vs reference (or run A vs run B) generations of the same
prompts, judged pairwise in a random order; the win rate with its Wilson interval, per-annotator
results and, where the run's eval report has an LLM judge, human-judge agreement and the judge's
position bias. Results go next to ``alignkit eval``'s report: ``<run>/eval/human_eval.json`` and ``.md``."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy.orm import Session

from alignkit.errors import UserError
from alignkit.studio.annotate import agreement, create_project, labelled, run_generations
from alignkit.studio.data import as_text
from alignkit.studio.db import Project, User

GUIDELINE = ("Two answers to the same prompt are shown in a random order; you are not told which model wrote "
             "which. Pick the better answer (helpful, correct, harmless), 'tie' when they are equally good, "
             "'both bad' when neither is acceptable.")


def eval_items(run_a: Path, run_b: Path | None) -> tuple[list, list[dict]]:
    """Items ``(prompt, [(a label, text), (b label, text)])`` and their metas ``{"sample": i}``:
    run A's policy against its reference, or against run B's policy on the same prompts."""
    a = run_generations(run_a)
    items, metas = [], []
    if run_b is None:
        for i, s in enumerate(a):
            if s.get("reference") is None:
                raise UserError(f"{run_a}/eval/eval.json has no reference generations",
                                "evaluate the run against a reference, or compare it with a second run")
            items.append((as_text(s["prompt"]), [("policy", s["policy"]), ("reference", s["reference"])]))
            metas.append({"sample": i})
        return items, metas
    b = {as_text(s["prompt"]): s for s in run_generations(run_b)}
    for i, s in enumerate(a):
        other = b.get(as_text(s["prompt"]))
        if other is not None:
            items.append((as_text(s["prompt"]), [("A", s["policy"]), ("B", other["policy"])]))
            metas.append({"sample": i})
    if not items:
        raise UserError(f"{run_a} and {run_b} share no prompt in their eval generations",
                        "evaluate both runs on the same data and generation settings")
    return items, metas


def create_eval(db: Session, name: str, run_a: Path, run_b: Path | None, annotators: list[User], overlap: int,
                seed: int = 0) -> Project:
    items, metas = eval_items(run_a, run_b)
    sources = [str(run_a)] + ([str(run_b)] if run_b else [])
    return create_project(db, name, "pairwise", GUIDELINE, overlap, annotators, items, sources, seed=seed,
                          eval_run=str(run_a), eval_other=str(run_b) if run_b else None, metas=metas)


def _outcome(choice) -> str:
    """A pairwise choice as the first response's outcome: ``a`` (response 0 won), ``b`` or ``tie``."""
    return "a" if choice == 0 else "b" if choice == 1 else "tie"


def win_rate(outcomes: list[str]) -> dict:
    """Response A's win rate over judgements (ties and both-bad count half) with its 95% Wilson interval."""
    from alignkit.metrics import wilson_interval

    n = len(outcomes)
    c = Counter(outcomes)
    rate = (c["a"] + 0.5 * c["tie"]) / n if n else float("nan")
    return {"value": rate, "ci": list(wilson_interval(rate, n)) if n else [0.0, 1.0], "n": n,
            "wins": c["a"], "losses": c["b"], "ties": c["tie"]}


def judge_position_bias(verdicts: list[dict]) -> dict:
    """How often the judge picked the first-shown response over both orders (0.5 = no position bias),
    and how often its two orders disagreed."""
    first = [v["prefer_a_first_order"] for v in verdicts]  # a shown first: True = the first-shown won
    second = [v["prefer_a_second_order"] for v in verdicts]  # b shown first: False = the first-shown won
    picks = [x for x in first if x is not None] + [not x for x in second if x is not None]
    flips = sum(x is not None and y is not None and x != y for x, y in zip(first, second))
    return {"first_position_rate": sum(picks) / len(picks) if picks else None, "judgements": len(picks),
            "inconsistent_pairs": flips, "pairs": len(verdicts)}


def results(db: Session, project: Project) -> dict:
    """The evaluation's win rate (overall and per annotator), agreement, and the human-judge comparison."""
    rows = db.execute(labelled(project.id)).all()
    outcomes, per_user, per_item = [], defaultdict(list), defaultdict(list)
    for label, item, user in rows:
        o = _outcome(label.value["choice"])
        outcomes.append(o)
        per_user[user.name].append(o)
        per_item[item.meta.get("sample", item.id)].append(o)
    a_name, b_name = ("policy", "reference") if project.eval_other is None else ("A", "B")
    out = {"project": project.name, "run": project.eval_run, "other_run": project.eval_other,
           "compared": f"{a_name} vs {b_name}", "win_rate": win_rate(outcomes),
           "per_annotator": {u: win_rate(o) for u, o in sorted(per_user.items())},
           "agreement": agreement(db, project), "guideline": project.guideline,
           "guideline_version": project.guideline_version,
           "interval": "95% Wilson score interval over judgements; ties and both-bad count 0.5",
           "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    out["judge"] = _judge_comparison(Path(project.eval_run), per_item) if project.eval_other is None else None
    return out


def _majority(outcomes: list[str]) -> str:
    c = Counter(outcomes).most_common()
    return "tie" if len(c) > 1 and c[0][1] == c[1][1] else c[0][0]


def _judge_comparison(run: Path, per_item: dict) -> dict | None:
    report = run / "eval" / "eval.json"
    judge = json.loads(report.read_text()).get("judge") if report.is_file() else None
    if not judge or not judge.get("verdicts"):
        return None
    verdicts = judge["verdicts"]
    shared = [i for i in per_item if isinstance(i, int) and i < len(verdicts)]
    agree = [_majority(per_item[i]) == verdicts[i]["outcome"] for i in shared]
    return {"model_path": judge.get("model_path"), "judge_win_rate": judge.get("win_rate"),
            "prompts": len(shared), "agreement": sum(agree) / len(agree) if agree else None,
            "position_bias": judge_position_bias(verdicts)}


def write_results(res: dict, run: Path) -> Path:
    """``<run>/eval/human_eval.json`` and ``human_eval.md``."""
    folder = run / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "human_eval.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=2, ensure_ascii=False))
    tmp.replace(path)
    w = res["win_rate"]
    lines = [f"# Blind human evaluation: {res['compared']}", "",
             f"Project `{res['project']}`, guideline version {res['guideline_version']}, written {res['written_at']}.",
             "", "| who | win rate | 95% interval | n | wins | losses | ties |", "|---|---|---|---|---|---|---|"]
    for who, r in [("all annotators", w), *res["per_annotator"].items()]:
        lines.append(f"| {who} | {r['value']:.3f} | [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] | {r['n']} | {r['wins']} | "
                     f"{r['losses']} | {r['ties']} |")
    ag = res["agreement"]
    lines += ["", f"Raw agreement: {ag['raw_agreement']}; Fleiss' kappa: {ag['fleiss_kappa']}."]
    if res.get("judge"):
        j = res["judge"]
        lines += [f"Human-judge agreement (majority vs judge outcome): {j['agreement']} over {j['prompts']} prompts; "
                  f"judge picks the first-shown response {j['position_bias']['first_position_rate']} of the time."]
    (folder / "human_eval.md").write_text("\n".join(lines) + "\n")
    return path
