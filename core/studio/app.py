"""The studio's web app: FastAPI routes over server-rendered Jinja2 pages (no JavaScript).

Every route but ``/login`` requires a signed-in user (``Depends(current_user)`` on the routers);
admin pages add ``Depends(admin_user)``. Every POST carries the session's CSRF token
(``Depends(checked_form)``). Jinja2 autoescapes every page, so model text and data render as text.
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.middleware.sessions import SessionMiddleware

from alignkit.errors import UserError
from alignkit.studio import annotate as ann
from alignkit.studio import data as dv
from alignkit.studio import humaneval, runs as rv
from alignkit.studio.auth import authenticate, create_user, csrf_ok, csrf_token
from alignkit.studio.db import MODES, Assignment, Item, Label, Project, User, make_engine, session_factory

PAGE_SIZE = 20


@dataclass
class StudioSettings:
    home: Path = Path("studio")  #: the studio's folder: secret key, saved data configs, exports
    db: str = ""  #: database URL (default: sqlite:///<home>/studio.db)
    runs: Path = Path("outputs")  #: the folder the runs dashboard lists
    data: list[str] = field(default_factory=list)  #: data configs offered first (preset names or YAML paths)
    model: list[str] = field(default_factory=list)  #: model overrides for token lengths (e.g. model=smollm2-135m)

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{(self.home / 'studio.db').resolve()}"


class NotSignedIn(Exception):
    pass


def secret_key(home: Path) -> str:
    """The cookie-signing key, made once (mode 0600) in the studio's folder."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "secret.key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


def all_routes(router) -> list:
    """Every route of an app or router, included routers' routes too (for tests and docs)."""
    out = []
    for r in router.routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            out += all_routes(inner)
        elif getattr(r, "path", None) is not None:
            out.append(r)
    return out


def create_app(settings: StudioSettings) -> FastAPI:
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    Sessions = session_factory(engine)
    pages = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
    pages.env.filters["text"] = dv.as_text
    pages.env.filters["json"] = lambda v: json.dumps(v, ensure_ascii=False)
    pages.env.globals["levels"] = ann.RATING_LEVELS
    app = FastAPI(title="alignkit studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.engine, app.state.sessions = settings, engine, Sessions
    cache: dict = {}
    cache_lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------------
    def get_db():
        db = Sessions()
        try:
            yield db
        finally:
            db.close()

    def current_user(request: Request, db: Session = Depends(get_db)) -> User:
        uid = request.session.get("uid")
        user = db.get(User, uid) if uid is not None else None
        if user is None:
            raise NotSignedIn()
        return user

    def admin_user(user: User = Depends(current_user)) -> User:
        if not user.is_admin:
            raise HTTPException(403, "admins only")
        return user

    async def checked_form(request: Request) -> dict:
        form = await request.form()
        if not csrf_ok(request.session, form.get("csrf")):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and submit again")
        return {k: form.get(k) for k in form.keys()} | {"_lists": {k: form.getlist(k) for k in form.keys()}}

    def render(request: Request, _tpl: str, user: User | None = None, status: int = 200, **ctx) -> HTMLResponse:
        return pages.TemplateResponse(request, _tpl, {"user": user, "csrf": csrf_token(request.session), **ctx},
                                      status_code=status)

    @app.exception_handler(NotSignedIn)
    async def _to_login(request: Request, _exc):
        if request.method == "GET":
            return RedirectResponse("/login?next=" + quote(request.url.path), status_code=303)
        return Response("sign in first", status_code=401)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return HTMLResponse(pages.get_template("error.html").render(message=str(exc.detail), user=None, csrf=""),
                            status_code=exc.status_code)

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError):
        return HTMLResponse(pages.get_template("error.html").render(message=str(exc), user=None, csrf=""),
                            status_code=400)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        resp = await call_next(request)
        resp.headers["Content-Security-Policy"] = ("default-src 'none'; style-src 'unsafe-inline'; "
                                                   "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    app.add_middleware(SessionMiddleware, secret_key=secret_key(settings.home), session_cookie="alignkit_studio",
                       max_age=12 * 3600, same_site="strict", https_only=False)

    # -- login ------------------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/"):
        return render(request, "login.html", next=next if next.startswith("/") and not next.startswith("//") else "/")

    @app.post("/login")
    def login(request: Request, form: dict = Depends(checked_form), db: Session = Depends(get_db)):
        user = authenticate(db, form.get("name", ""), form.get("password", ""))
        if user is None:
            return render(request, "login.html", status=401, error="wrong name or password", next="/")
        request.session.clear()
        request.session["uid"] = user.id
        csrf_token(request.session)
        nxt = form.get("next") or "/"
        return RedirectResponse(nxt if nxt.startswith("/") and not nxt.startswith("//") else "/", status_code=303)

    signed = APIRouter(dependencies=[Depends(current_user)])
    admin = APIRouter(dependencies=[Depends(admin_user)])

    @signed.post("/logout")
    def logout(request: Request, form: dict = Depends(checked_form)):
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @signed.get("/", response_class=HTMLResponse)
    def home(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)):
        mine = db.scalars(select(Project).join(Assignment, Assignment.project_id == Project.id)
                          .where(Assignment.user_id == user.id).distinct().order_by(Project.id)).all()
        rows = [(p, *ann.progress(db, p, user)) for p in mine]
        return render(request, "home.html", user, projects=rows)

    # -- annotation (any signed-in user, own assignments only) -------------------------------------
    def own_project(db: Session, user: User, pid: int) -> Project:
        project = db.get(Project, pid)
        assigned = project is not None and db.scalar(
            select(func.count()).select_from(Assignment).where(Assignment.project_id == pid,
                                                                Assignment.user_id == user.id))
        if not assigned:
            raise HTTPException(404, "no such project among your assignments")
        return project

    def shown_order(a: Assignment) -> list[tuple[int, str]]:
        """``(response index, text)`` in the order the assignment shows them."""
        return [(i, a.item.responses[i]) for i in a.order]

    @signed.get("/annotate/{pid}", response_class=HTMLResponse)
    def annotate_page(request: Request, pid: int, user: User = Depends(current_user), db: Session = Depends(get_db)):
        project = own_project(db, user, pid)
        a = ann.next_assignment(db, project, user)
        done, total = ann.progress(db, project, user)
        if a is None:
            return render(request, "annotate.html", user, project=project, done=done, total=total, assignment=None)
        return render(request, "annotate.html", user, project=project, done=done, total=total, assignment=a,
                      shown=shown_order(a), shown_at=f"{time.time():.3f}")

    @signed.post("/annotate/{pid}/{aid}")
    def annotate_submit(request: Request, pid: int, aid: int, form: dict = Depends(checked_form),
                        user: User = Depends(current_user), db: Session = Depends(get_db)):
        project = own_project(db, user, pid)
        a = db.get(Assignment, aid)
        if a is None or a.user_id != user.id or a.project_id != pid:
            raise HTTPException(404, "no such assignment of yours")
        try:
            value = ann.parse_value(project, len(a.item.responses), form)
        except UserError as exc:
            done, total = ann.progress(db, project, user)
            return render(request, "annotate.html", user, status=400, project=project, done=done, total=total,
                          assignment=a, shown=shown_order(a), shown_at=form.get("shown_at", ""), error=str(exc))
        try:
            seconds = max(0.0, time.time() - float(form.get("shown_at", "")))
        except ValueError:
            seconds = None
        ann.save_label(db, a, user, project, value, form.get("feedback", ""), seconds)
        return RedirectResponse(f"/annotate/{pid}", status_code=303)

    @signed.get("/labels", response_class=HTMLResponse)
    def my_labels(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)):
        rows = db.execute(select(Label, Item, Project).join(Item, Label.item_id == Item.id)
                          .join(Project, Label.project_id == Project.id).where(Label.user_id == user.id)
                          .order_by(Label.id.desc()).limit(200)).all()
        return render(request, "labels.html", user, rows=rows)

    # -- users ------------------------------------------------------------------------------------
    @admin.get("/users", response_class=HTMLResponse)
    def users_page(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)):
        return render(request, "users.html", user, users=db.scalars(select(User).order_by(User.id)).all())

    @admin.post("/users")
    def users_create(request: Request, form: dict = Depends(checked_form), db: Session = Depends(get_db)):
        create_user(db, form.get("name", ""), form.get("password", ""), form.get("role", "annotator"))
        return RedirectResponse("/users", status_code=303)

    # -- data browser -----------------------------------------------------------------------------
    def data_view(name: str) -> tuple[dv.DataView, object]:
        with cache_lock:
            if ("view", name) not in cache:
                cfg = dv.compose_run_config(settings.home, name, settings.model)
                cache[("view", name)] = dv.load_view(cfg, name)
            if "tokenizer" not in cache:
                from alignkit.models.build import build_tokenizer

                cache["tokenizer"] = build_tokenizer(cache[("view", name)].cfg.model)
            view = cache[("view", name)]
            for s in view.sources:
                if not s.stats:
                    s.stats = dv.source_stats(s, cache["tokenizer"], view.cfg.data)
                    s.stats["_lengths"] = dv.token_lengths(s.examples, s.kind, cache["tokenizer"])
            return view, cache["tokenizer"]

    @admin.get("/data", response_class=HTMLResponse)
    def data_page(request: Request, name: str = "", source: int = 0, q: str = "", min_tokens: int = 0,
                  truncated: bool = False, duplicates: bool = False, page: int = 1,
                  user: User = Depends(current_user)):
        names = dv.data_names(settings.home, settings.data)
        name = name or (names[0] if names else "")
        names = names if name in names else [name, *names]
        view, _ = data_view(name)
        src = view.sources[min(max(source, 0), len(view.sources) - 1)]
        lengths = src.stats["_lengths"]
        seen, dup_idx = {}, set()
        for i, ex in enumerate(src.examples):
            key = dv.as_text(ex["prompt"])
            if key in seen:
                dup_idx.update((seen[key], i))
            seen.setdefault(key, i)
        picked = [i for i, ex in enumerate(src.examples)
                  if (not q or dv.matches(ex, src.kind, q)) and lengths[i] >= min_tokens
                  and (not truncated or lengths[i] > view.cfg.data.max_length) and (not duplicates or i in dup_idx)]
        pages_n = max(1, -(-len(picked) // PAGE_SIZE))
        page = min(max(page, 1), pages_n)
        shown = [(i, src.examples[i], lengths[i]) for i in picked[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]]
        mixture = dv.mixture_stats(view)
        return render(request, "data.html", user, names=names, name=name, view=view, src=src, shown=shown,
                      matched=len(picked), page=page, pages=pages_n, q=q, min_tokens=min_tokens, truncated=truncated,
                      duplicates=duplicates, mixture=mixture, responses_of=dv.responses_of)

    @admin.get("/data/example", response_class=HTMLResponse)
    def data_example(request: Request, name: str, source: int = 0, i: int = 0, user: User = Depends(current_user)):
        view, _ = data_view(name)
        src = view.sources[min(max(source, 0), len(view.sources) - 1)]
        if not 0 <= i < len(src.examples):
            raise HTTPException(404, "no such example")
        ex = src.examples[i]
        return render(request, "example.html", user, name=name, src=src, i=i, ex=ex,
                      responses=dv.responses_of(ex, src.kind), length=src.stats["_lengths"][i],
                      max_length=view.cfg.data.max_length)

    # -- prompt templates -------------------------------------------------------------------------
    def template_rows(path: str) -> list[dict]:
        from alignkit.data.load import read_rows

        with cache_lock:
            if ("rows", path) not in cache:
                cache[("rows", path)] = read_rows(path)
            return cache[("rows", path)]

    def template_ctx(form: dict) -> dict:
        kind = form.get("kind") or "sft"
        slots = {s: form.get(f"slot_{s}", "") for s in dv.SLOTS.get(kind, ())}
        return {"path": form.get("path", ""), "kind": kind, "slots": slots, "tname": form.get("name", ""),
                "max_length": form.get("max_length") or "512"}

    @admin.get("/templates", response_class=HTMLResponse)
    def templates_page(request: Request, path: str = "", kind: str = "sft", user: User = Depends(current_user)):
        ctx = template_ctx({"path": path, "kind": kind})
        rows = template_rows(path) if path else []
        return render(request, "templates.html", user, **ctx, columns=sorted(rows[0]) if rows else [],
                      sample=rows[:3], kinds=dv.KINDS, slot_names=dv.SLOTS)

    @admin.post("/templates/preview", response_class=HTMLResponse)
    def templates_preview(request: Request, form: dict = Depends(checked_form), user: User = Depends(current_user)):
        ctx = template_ctx(form)
        rows = template_rows(ctx["path"])
        previews, error = [], None
        try:
            previews = [dv.render_template(ctx["slots"], r) for r in rows[:5]]
        except UserError as exc:
            error = str(exc)
        return render(request, "templates.html", user, **ctx, columns=sorted(rows[0]) if rows else [],
                      sample=rows[:3], kinds=dv.KINDS, slot_names=dv.SLOTS, previews=previews, error=error)

    @admin.post("/templates/save", response_class=HTMLResponse)
    def templates_save(request: Request, form: dict = Depends(checked_form), user: User = Depends(current_user)):
        ctx = template_ctx(form)
        yaml_path, command = dv.save_template(settings.home, ctx["tname"], ctx["kind"], ctx["slots"], ctx["path"],
                                              max_length=int(ctx["max_length"]))
        with cache_lock:
            cache.pop(("view", ctx["tname"]), None)
        return render(request, "template_saved.html", user, yaml_path=yaml_path, yaml=yaml_path.read_text(),
                      command=command, name=ctx["tname"])

    # -- projects (admin) -------------------------------------------------------------------------
    @admin.get("/projects", response_class=HTMLResponse)
    def projects_page(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)):
        projects = db.scalars(select(Project).where(Project.eval_run.is_(None)).order_by(Project.id)).all()
        return render(request, "projects.html", user, projects=[(p, *ann.progress(db, p)) for p in projects],
                      annotators=db.scalars(select(User).order_by(User.name)).all(), modes=MODES,
                      levels=ann.RATING_LEVELS)

    def picked_users(db: Session, form: dict) -> list[User]:
        names = form["_lists"].get("annotators", [])
        return list(db.scalars(select(User).where(User.name.in_(names)).order_by(User.id)).all())

    @admin.post("/projects")
    def projects_create(request: Request, form: dict = Depends(checked_form), db: Session = Depends(get_db)):
        sources = [s.strip() for s in (form.get("sources") or "").splitlines() if s.strip()]
        mode = form.get("mode", "pairwise")
        k = int(form.get("k") or 0) or None
        items = ann.gather(sources, 2 if mode == "pairwise" else k)
        project = ann.create_project(db, (form.get("name") or "").strip(), mode, form.get("guideline", ""),
                                     int(form.get("overlap") or 1), picked_users(db, form), items, sources,
                                     seed=int(form.get("seed") or 0))
        return RedirectResponse(f"/projects/{project.id}", status_code=303)

    def admin_project(db: Session, pid: int) -> Project:
        project = db.get(Project, pid)
        if project is None:
            raise HTTPException(404, "no such project")
        return project

    @admin.get("/projects/{pid}", response_class=HTMLResponse)
    def project_page(request: Request, pid: int, user: User = Depends(current_user), db: Session = Depends(get_db)):
        project = admin_project(db, pid)
        people = db.scalars(select(User).join(Assignment, Assignment.user_id == User.id)
                            .where(Assignment.project_id == pid).distinct().order_by(User.name)).all()
        per_user = [(u, *ann.progress(db, project, u)) for u in people]
        recent = db.execute(ann.labelled(pid).order_by(None).order_by(Label.id.desc()).limit(20)).all()
        return render(request, "project.html", user, project=project, per_user=per_user,
                      total=ann.progress(db, project), agreement=ann.agreement(db, project), recent=recent,
                      formats=ann.EXPORT_FORMATS, written=request.query_params.get("written"))

    @admin.post("/projects/{pid}/guideline")
    def project_guideline(request: Request, pid: int, form: dict = Depends(checked_form),
                          db: Session = Depends(get_db)):
        project = admin_project(db, pid)
        text = form.get("guideline", "")
        if text != project.guideline:
            project.guideline, project.guideline_version = text, project.guideline_version + 1
            db.commit()
        return RedirectResponse(f"/projects/{pid}", status_code=303)

    @admin.get("/projects/{pid}/export/{fmt}")
    def project_export(pid: int, fmt: str, db: Session = Depends(get_db)):
        project = admin_project(db, pid)
        rows, _ = ann.export_rows(db, project, fmt)
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        return Response(body, media_type="application/x-ndjson",
                        headers={"Content-Disposition": f'attachment; filename="project{pid}-{fmt}.jsonl"'})

    @admin.post("/projects/{pid}/export")
    def project_export_write(request: Request, pid: int, form: dict = Depends(checked_form),
                             db: Session = Depends(get_db)):
        project = admin_project(db, pid)
        path, _ = ann.write_export(db, project, form.get("format", "preference"), settings.home / "exports")
        return RedirectResponse(f"/projects/{pid}?written={quote(str(path))}", status_code=303)

    # -- blind evaluations (admin) ----------------------------------------------------------------
    @admin.get("/evals", response_class=HTMLResponse)
    def evals_page(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)):
        projects = db.scalars(select(Project).where(Project.eval_run.is_not(None)).order_by(Project.id)).all()
        runs, _ = rv.find_runs(settings.runs)
        return render(request, "evals.html", user, projects=[(p, *ann.progress(db, p)) for p in projects],
                      runs=[r for r in runs if (r / "eval" / "eval.json").is_file()],
                      annotators=db.scalars(select(User).order_by(User.name)).all())

    @admin.post("/evals")
    def evals_create(request: Request, form: dict = Depends(checked_form), db: Session = Depends(get_db)):
        run_a = rv.inside(settings.runs, form.get("run", ""))
        run_b = rv.inside(settings.runs, form["run_b"]) if form.get("run_b") else None
        project = humaneval.create_eval(db, (form.get("name") or "").strip() or f"blind eval of {run_a.name}",
                                        run_a, run_b, picked_users(db, form), int(form.get("overlap") or 1),
                                        seed=int(form.get("seed") or 0))
        return RedirectResponse(f"/evals/{project.id}", status_code=303)

    @admin.get("/evals/{pid}", response_class=HTMLResponse)
    def eval_page(request: Request, pid: int, user: User = Depends(current_user), db: Session = Depends(get_db)):
        project = admin_project(db, pid)
        if project.eval_run is None:
            raise HTTPException(404, "not an evaluation")
        return render(request, "eval.html", user, project=project, res=humaneval.results(db, project),
                      total=ann.progress(db, project), written=request.query_params.get("written"))

    @admin.post("/evals/{pid}/save")
    def eval_save(request: Request, pid: int, form: dict = Depends(checked_form), db: Session = Depends(get_db)):
        project = admin_project(db, pid)
        if project.eval_run is None:
            raise HTTPException(404, "not an evaluation")
        path = humaneval.write_results(humaneval.results(db, project), Path(project.eval_run))
        return RedirectResponse(f"/evals/{pid}?written={quote(str(path))}", status_code=303)

    # -- launching runs (admin) -------------------------------------------------------------------
    from alignkit.studio.launch import Launcher, overrides_for

    launcher = Launcher(settings.home)
    app.state.launcher = launcher

    def launch_form(request: Request, user: User, status: int = 200, **ctx) -> HTMLResponse:
        from alignkit.config.compose import yaml_options
        from alignkit.registry import default_registry

        return render(request, "launch.html", user, status=status, algos=sorted(default_registry().algorithms),
                      models=yaml_options("model"), datas=dv.data_names(settings.home, settings.data),
                      launches=sorted(launcher.launches.values(), key=lambda x: -x.number), **ctx)

    @admin.get("/launch", response_class=HTMLResponse)
    def launch_page(request: Request, user: User = Depends(current_user)):
        return launch_form(request, user, form={})

    @admin.post("/launch")
    def launch_start(request: Request, form: dict = Depends(checked_form), user: User = Depends(current_user)):
        try:
            overrides = overrides_for(settings.home, settings.runs, form.get("algo", "dpo"),
                                      form.get("model", "tiny"), form.get("data", "hh-rlhf"),
                                      int(form.get("max_steps") or 100), form.get("extra", ""))
            run = launcher.start(overrides)
        except UserError as exc:
            return launch_form(request, user, status=400, form=form, error=f"alignkit: {exc}")
        return RedirectResponse(f"/launch/{run.number}", status_code=303)

    @admin.get("/launch/{number}", response_class=HTMLResponse)
    def launch_log(request: Request, number: int, user: User = Depends(current_user)):
        run = launcher.launches.get(number)
        if run is None:
            raise HTTPException(404, "no such launch (launches are listed until the server restarts)")
        return render(request, "launch_log.html", user, run=run, runs_root=settings.runs)

    # -- runs dashboard (admin) -------------------------------------------------------------------
    @admin.get("/runs", response_class=HTMLResponse)
    def runs_page(request: Request, user: User = Depends(current_user)):
        runs, sweeps = rv.find_runs(settings.runs)
        return render(request, "runs.html", user, root=settings.runs, table=rv.runs_table(settings.runs, runs),
                      sweeps=[rv.read_sweep(s) for s in sweeps], rel=lambda p: str(p.relative_to(settings.runs))
                      if settings.runs in p.parents else str(p))

    @admin.get("/runs/view", response_class=HTMLResponse)
    def run_page(request: Request, path: str, user: User = Depends(current_user)):
        run = rv.inside(settings.runs, path)
        if not (run / "config.yaml").is_file():
            raise HTTPException(404, "not a run folder")
        return render(request, "run.html", user, path=path, curves=rv.curves(rv.read_metrics(run)),
                      report=rv.eval_report(run), config=(run / "config.yaml").read_text())

    @admin.get("/runs/compare", response_class=HTMLResponse)
    def runs_compare(request: Request, user: User = Depends(current_user)):
        paths = request.query_params.getlist("path")
        runs = [rv.inside(settings.runs, p) for p in paths]
        reports = [rv.eval_report(r) for r in runs]
        by_prompt: dict[str, list] = {}
        for j, rep in enumerate(reports):
            for s in (rep or {}).get("samples", []):
                by_prompt.setdefault(s["prompt"], [None] * len(runs))[j] = s["policy"]
        return render(request, "compare.html", user, paths=paths, rows=list(by_prompt.items())[:200])

    app.include_router(signed)
    app.include_router(admin)
    return app
