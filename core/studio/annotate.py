"""Annotation projects: response sources, items, overlapping assignments, agreement and exports.

Pure functions over the ORM models (:mod:`alignkit.studio.db`), so the web pages, the command line and
the tests share them.
"""
from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alignkit.errors import UserError
from alignkit.studio.data import as_text, formats, responses_of
from alignkit.studio.db import Assignment, Item, Label, Project, User

#: the four-level rating scale of human evaluation (Self-Instruct's rubric, as the alignment survey gives it)
RATING_LEVELS = {
    "A": "valid and satisfying: the response follows the instruction and is correct",
    "B": "acceptable, with minor errors or imperfections",
    "C": "relevant and responds to the instruction, but has significant errors in its content",
    "D": "irrelevant or invalid",
}
#: a rating's score in the ranked export, and whether it is desirable in the unpaired export
RATING_SCORE = {"A": 3.0, "B": 2.0, "C": 1.0, "D": 0.0}
PAIR_SPECIAL = ("tie", "both_bad")
EXPORT_FORMATS = ("preference", "ranked", "unpaired", "hindsight")


# -- sources ----------------------------------------------------------------------------------------

def run_generations(run: Path) -> list[dict]:
    """``generation.samples`` of a run's ``alignkit eval`` report (``<run>/eval/eval.json``)."""
    report = run / "eval" / "eval.json"
    if not report.is_file():
        raise UserError(f"{run} has no eval/eval.json", f"run `alignkit eval {run}` first")
    samples = ((json.loads(report.read_text()).get("generation") or {}).get("samples")) or []
    if not samples:
        raise UserError(f"{report} holds no generations", "evaluate a causal LM with eval.generation.num_prompts > 0")
    return samples


def read_source(spec: str) -> list[tuple[object, list[tuple[str, str]]]]:
    """``[(prompt, [(source label, response), ...]), ...]`` of one response source: a run folder (its eval
    report's policy and reference generations) or a data file in any alignkit format (read through
    :func:`alignkit.data.load.read_rows` and the format's converter; prompts stay as the format gives them,
    a string or chat messages)."""
    from alignkit.data.formats import FormatError, detect_format
    from alignkit.data.load import read_rows

    path = Path(spec).expanduser()
    if path.is_dir():
        out = []
        for s in run_generations(path):
            resp = [(f"{path.name}:policy", s["policy"])]
            if s.get("reference") is not None:
                resp.append((f"{path.name}:reference", s["reference"]))
            out.append((s["prompt"], resp))
        return out
    rows = read_rows(spec)
    fmts = formats()
    try:
        fmt = detect_format(list(rows[0].keys()), {}, fmts)
    except FormatError as exc:
        raise UserError(f"{spec}: {exc}", "give a file in an alignkit data format or a run folder") from None
    out = []
    for i, row in enumerate(rows):
        try:
            ex = fmt.convert(row, {})
        except FormatError as exc:
            raise UserError(f"{spec}, record {i + 1}: {exc}", "fix that record") from None
        out.append((ex["prompt"], [(f"{path.name}:{label}", text) for label, text in responses_of(ex, fmt.kind)
                                   if isinstance(text, str)]))
    return out


def gather(specs: list[str], k: int | None = None) -> list[tuple[object, list[tuple[str, str]]]]:
    """Prompts with their responses from every source (joined by prompt text, first-seen order; the first
    source's form of the prompt is kept), those with at least two responses (the first ``k`` when given)."""
    joined: dict[str, tuple[object, list]] = {}
    for spec in specs:
        for prompt, resp in read_source(spec):
            joined.setdefault(as_text(prompt), (prompt, []))[1].extend(resp)
    out = [(p, r[:k] if k else r) for p, r in joined.values() if len(r) >= 2]
    if not out:
        raise UserError("no prompt has two or more responses in the sources given",
                        "add a source answering the same prompts (a run folder, a preference file, pairs output)")
    return out


# -- projects ---------------------------------------------------------------------------------------

def create_project(db: Session, name: str, mode: str, guideline: str, overlap: int, annotators: list[User],
                   items: list[tuple[str, list[tuple[str, str]]]], sources: list[str], seed: int = 0,
                   eval_run: str | None = None, eval_other: str | None = None,
                   metas: list[dict] | None = None) -> Project:
    """A project with its items and assignments: item ``i`` goes to ``overlap`` annotators in turn
    (``i*overlap .. i*overlap+overlap-1`` modulo their number), each with its own random order."""
    from alignkit.studio.db import MODES

    if mode not in MODES:
        raise UserError(f"unknown mode {mode!r}", f"choose one of {', '.join(MODES)}")
    if not annotators:
        raise UserError("the project has no annotators", "pick at least one")
    if not 1 <= overlap <= len(annotators):
        raise UserError(f"overlap {overlap} is out of range", f"use 1 to {len(annotators)} (the annotators picked)")
    if db.scalar(select(Project).where(Project.name == name)) is not None:
        raise UserError(f"a project named {name!r} exists", "pick another name")
    rng = random.Random(seed)
    project = Project(name=name, mode=mode, guideline=guideline, overlap=overlap, sources=sources,
                      eval_run=eval_run, eval_other=eval_other)
    db.add(project)
    db.flush()
    for i, (prompt, resp) in enumerate(items):
        item = Item(project_id=project.id, prompt=prompt, responses=[t for _, t in resp],
                    response_sources=[s for s, _ in resp], meta=(metas[i] if metas else {}))
        db.add(item)
        db.flush()
        for j in range(overlap):
            user = annotators[(i * overlap + j) % len(annotators)]
            order = list(range(len(resp)))
            rng.shuffle(order)
            db.add(Assignment(item_id=item.id, user_id=user.id, project_id=project.id, order=order))
    db.commit()
    return project


def next_assignment(db: Session, project: Project, user: User) -> Assignment | None:
    """The user's first assignment in ``project`` without a label."""
    labelled = select(Label.assignment_id).where(Label.user_id == user.id, Label.project_id == project.id)
    return db.scalar(select(Assignment).where(Assignment.project_id == project.id, Assignment.user_id == user.id,
                                              Assignment.id.not_in(labelled)).order_by(Assignment.id).limit(1))


def progress(db: Session, project: Project, user: User | None = None) -> tuple[int, int]:
    """(labels, assignments) of the project (of one user when given)."""
    qa = select(func.count()).select_from(Assignment).where(Assignment.project_id == project.id)
    ql = select(func.count()).select_from(Label).where(Label.project_id == project.id)
    if user is not None:
        qa, ql = qa.where(Assignment.user_id == user.id), ql.where(Label.user_id == user.id)
    return db.scalar(ql), db.scalar(qa)


def parse_value(project: Project, n: int, form: dict) -> dict:
    """The label value from a submitted form, in original response indices; a bad form is a UserError."""
    if project.mode == "pairwise":
        choice = form.get("choice", "")
        if choice in PAIR_SPECIAL:
            return {"choice": choice}
        if choice.isdigit() and int(choice) < n:
            return {"choice": int(choice)}
        raise UserError("no choice was made", "pick a response, 'tie' or 'both bad'")
    if project.mode == "rating":
        ratings = [form.get(f"rating_{i}", "") for i in range(n)]
        if any(r not in RATING_LEVELS for r in ratings):
            raise UserError("every response needs a rating", f"choose one of {', '.join(RATING_LEVELS)} for each")
        return {"ratings": ratings}
    ranks = []
    for i in range(n):
        r = form.get(f"rank_{i}", "")
        ranks.append(int(r) if r.isdigit() else 0)
    if sorted(ranks) != list(range(1, n + 1)):
        raise UserError("the ranks are not a ranking", f"give each response a different rank from 1 to {n}")
    return {"ranking": sorted(range(n), key=lambda i: ranks[i])}


def save_label(db: Session, assignment: Assignment, user: User, project: Project, value: dict, feedback: str,
               seconds: float | None) -> Label:
    """Commit one label; a second submission of the same assignment returns the first (nothing doubles)."""
    label = Label(assignment_id=assignment.id, item_id=assignment.item_id, user_id=user.id, project_id=project.id,
                  value=value, feedback=(feedback or "").strip(), order_shown=list(assignment.order),
                  guideline_version=project.guideline_version, seconds=seconds)
    db.add(label)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        return db.scalar(select(Label).where(Label.assignment_id == assignment.id))
    return label


# -- agreement --------------------------------------------------------------------------------------

def labelled(project_id: int):
    """The query of a project's ``(Label, Item, User)`` rows, oldest label first."""
    return (select(Label, Item, User).join(Item, Label.item_id == Item.id).join(User, Label.user_id == User.id)
            .where(Label.project_id == project_id).order_by(Label.id))


def fleiss_kappa(table: list[list[int]]) -> float:
    """Fleiss' kappa of an ``items x categories`` table of rater counts (every item rated by the same
    number of raters ``m >= 2``): ``(P̄ - P̄e) / (1 - P̄e)``, ``P_i = (Σ_j n_ij² - m) / (m(m-1))``,
    ``p_j = Σ_i n_ij / (N m)``, ``P̄e = Σ_j p_j²``; nan when ``P̄e = 1`` (one category used)."""
    if not table:
        return float("nan")
    m = sum(table[0])
    if m < 2 or any(sum(row) != m for row in table):
        raise ValueError("every item needs the same number (>= 2) of ratings")
    n_items = len(table)
    p_bar = sum((sum(c * c for c in row) - m) / (m * (m - 1)) for row in table) / n_items
    p_j = [sum(row[j] for row in table) / (n_items * m) for j in range(len(table[0]))]
    pe = sum(p * p for p in p_j)
    return float("nan") if pe == 1 else (p_bar - pe) / (1 - pe)


def cohen_kappa(a: list, b: list) -> float:
    """Cohen's kappa of two raters' labels on the same units (scikit-learn's ``cohen_kappa_score``);
    nan when both used one and the same category throughout."""
    from sklearn.metrics import cohen_kappa_score

    if len(set(a) | set(b)) < 2:
        return float("nan")
    return float(cohen_kappa_score(a, b))


def categories(project: Project, item: Item, label: Label) -> list[tuple[tuple, str]]:
    """``[(unit, category)]`` a label gives for agreement: pairwise: the chosen response's source
    (or tie / both_bad) per item; rating: the level per (item, response); ranking: the top response."""
    v = label.value
    if project.mode == "pairwise":
        c = v["choice"]
        return [((item.id,), c if isinstance(c, str) else item.response_sources[c])]
    if project.mode == "rating":
        return [((item.id, i), r) for i, r in enumerate(v["ratings"])]
    return [((item.id,), item.response_sources[v["ranking"][0]])]


def agreement(db: Session, project: Project) -> dict:
    """Raw agreement (units whose raters all agree, of those with 2+ raters), Fleiss' kappa (over the
    units with the most common number of raters) and Cohen's kappa of each pair of annotators."""
    rows = db.execute(labelled(project.id)).all()
    by_unit: dict[tuple, dict[str, str]] = defaultdict(dict)
    for label, item, user in rows:
        for unit, cat in categories(project, item, label):
            by_unit[unit][user.name] = cat
    multi = {u: r for u, r in by_unit.items() if len(r) >= 2}
    out = {"labels": len(rows), "units": len(by_unit), "units_with_overlap": len(multi),
           "raw_agreement": round(sum(len(set(r.values())) == 1 for r in multi.values()) / len(multi), 4)
           if multi else None,
           "fleiss_kappa": None, "cohen_kappa": []}
    if multi:
        m = Counter(len(r) for r in multi.values()).most_common(1)[0][0]
        cats = sorted({c for r in multi.values() for c in r.values()})
        table = [[list(r.values()).count(c) for c in cats] for r in multi.values() if len(r) == m]
        out["fleiss_kappa"] = _finite(fleiss_kappa(table))
        out["fleiss_units"] = len(table)
    names = sorted({n for r in by_unit.values() for n in r})
    for a, b in combinations(names, 2):
        shared = [(r[a], r[b]) for r in by_unit.values() if a in r and b in r]
        if shared:
            out["cohen_kappa"].append({"a": a, "b": b, "n": len(shared),
                                       "kappa": _finite(cohen_kappa([x for x, _ in shared], [y for _, y in shared])),
                                       "raw": sum(x == y for x, y in shared) / len(shared)})
    return out


def _finite(x: float) -> float | None:
    return None if x != x else round(x, 4)


# -- exports ----------------------------------------------------------------------------------------

def _prov(label: Label, user: User, project: Project, item: Item) -> dict:
    return {"annotator": user.name, "labelled_at": label.created.replace(tzinfo=timezone.utc).isoformat()
            if label.created.tzinfo is None else label.created.isoformat(),
            "guideline_version": label.guideline_version, "project": project.name, "item": item.id,
            "order_shown": [item.response_sources[i] for i in label.order_shown],
            "annotation": json.dumps(label.value)}  # a JSON string: one column type whatever the task


def export_rows(db: Session, project: Project, fmt: str) -> tuple[list[dict], dict]:
    """Rows of one export format (one row per label, or per response for ``unpaired``) and counts.

    * ``preference``: ``{"prompt", "chosen", "rejected"}``: pairwise labels (ties and both-bad left out
      and counted), rankings (best against worst) and ratings (a higher level against a lower one);
    * ``ranked``: ``{"prompt", "responses", "scores"}`` from rankings (k-1 .. 0) and ratings (A=3 .. D=0);
    * ``unpaired``: ``{"prompt", "completion", "label"}``: chosen / rejected of a pair, ratings A-B
      desirable and C-D undesirable, both responses of a both-bad pair undesirable;
    * ``hindsight``: preference rows of labels with free-text feedback, with a ``feedback`` column.

    Every row carries its provenance (``annotator``, ``labelled_at``, ``guideline_version``, ``project``,
    ``item``, ``order_shown`` as source names, ``annotation``: the label as a JSON string)."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}", f"choose one of {', '.join(EXPORT_FORMATS)}")
    rows_db = db.execute(labelled(project.id)).all()
    out, skipped = [], Counter()
    for label, item, user in rows_db:
        prov = _prov(label, user, project, item)
        prompt, resp = item.prompt, item.responses
        scores = _scores(project, label, len(resp))
        if fmt == "unpaired":
            for i, good in _desirable(project, label, len(resp)):
                out.append({"prompt": prompt, "completion": resp[i], "label": good, "source": item.response_sources[i],
                            **prov})
            continue
        if fmt == "ranked":
            if scores is None or len(set(scores)) < 2:
                skipped["no_order"] += 1
                continue
            out.append({"prompt": prompt, "responses": resp, "scores": scores, "sources": item.response_sources,
                        **prov})
            continue
        pair = _pair(project, label, scores)
        if pair is None:
            skipped[label.value.get("choice", "tied") if project.mode == "pairwise" else "tied"] += 1
            continue
        if fmt == "hindsight" and not label.feedback:
            skipped["no_feedback"] += 1
            continue
        row = {"prompt": prompt, "chosen": resp[pair[0]], "rejected": resp[pair[1]],
               "chosen_source": item.response_sources[pair[0]], "rejected_source": item.response_sources[pair[1]]}
        if fmt == "hindsight":
            row["feedback"] = label.feedback
        out.append({**row, **prov})
    return out, {"labels": len(rows_db), "rows": len(out), "skipped": dict(skipped)}


def _scores(project: Project, label: Label, n: int) -> list[float] | None:
    v = label.value
    if project.mode == "rating":
        return [RATING_SCORE[r] for r in v["ratings"]]
    if project.mode == "ranking":
        scores = [0.0] * n
        for place, i in enumerate(v["ranking"]):
            scores[i] = float(n - 1 - place)
        return scores
    c = v["choice"]
    if isinstance(c, int) and n == 2:
        return [1.0 if i == c else 0.0 for i in range(n)]
    return None


def _pair(project: Project, label: Label, scores: list[float] | None) -> tuple[int, int] | None:
    if project.mode == "pairwise":
        c = label.value["choice"]
        if not isinstance(c, int):
            return None
        others = [i for i in range(len(label.order_shown)) if i != c]
        return (c, others[0]) if len(others) == 1 else None
    if scores is None or max(scores) == min(scores):
        return None
    return scores.index(max(scores)), scores.index(min(scores))


def _desirable(project: Project, label: Label, n: int) -> list[tuple[int, bool]]:
    v = label.value
    if project.mode == "rating":
        return [(i, r in ("A", "B")) for i, r in enumerate(v["ratings"])]
    if project.mode == "ranking":
        return [(v["ranking"][0], True), (v["ranking"][-1], False)]
    c = v["choice"]
    if c == "both_bad":
        return [(i, False) for i in range(n)]
    if c == "tie":
        return []
    return [(c, True)] + [(i, False) for i in range(n) if i != c]


def write_export(db: Session, project: Project, fmt: str, folder: Path) -> tuple[Path, dict]:
    """``<folder>/<project>-<fmt>.jsonl`` and its ``.provenance.json`` (project, guideline text and
    version, annotators, counts, time); written to temporary names, then renamed."""
    rows, counts = export_rows(db, project, fmt)
    folder.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in project.name)
    path = folder / f"{stem}-{fmt}.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    prov = provenance(db, project, fmt, counts)
    prov["output"] = str(path)
    path.with_suffix("").with_suffix(".provenance.json").write_text(json.dumps(prov, indent=2, ensure_ascii=False))
    return path, counts


def provenance(db: Session, project: Project, fmt: str, counts: dict) -> dict:
    names = db.scalars(select(User.name).join(Label, Label.user_id == User.id)
                       .where(Label.project_id == project.id).distinct()).all()
    return {"project": project.name, "mode": project.mode, "format": fmt, "sources": project.sources,
            "guideline": project.guideline, "guideline_version": project.guideline_version,
            "annotators": sorted(names), "counts": counts, "agreement": agreement(db, project),
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
