"""The Turing-test web app (FastAPI): pages for raters, a JSON API, and a token-protected admin.

Rater pages: ``/`` consent and instructions -> ``/signin`` -> ``/rate`` (one image at a time)
-> ``/done``. The rating page is a plain HTML form that works without JavaScript; with it,
``static/rate.js`` adds keyboard shortcuts and answers through the JSON API without reloads.

JSON API (what the page and the load test use; errors are ``{"detail": message}``)::

    GET  /api/study                      public study facts (no answer key)
    POST /api/raters                     {rater, specialty, years, consent} -> 201 new / 200 resumed
    GET  /api/raters/{rater}/next        progress and the next image id
    POST /api/answers                    {rater, image, answer, confidence[, elapsed_ms]} -> 201
    GET  /api/admin/results              results (Authorization: Bearer TOKEN, or admin cookie)
    GET  /api/admin/answers.csv          every answer joined with the key

The answer key (origin and class of each image) never leaves the server except through the
two admin endpoints and the admin page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from augforge.turing.study import SPECIALTIES, Study, StudyError

HERE = Path(__file__).resolve().parent
RATER_COOKIE = "turing_rater"
ADMIN_COOKIE = "turing_admin"
NO_STORE = {"Cache-Control": "no-store"}


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rater: str
    specialty: str
    years: float
    consent: bool


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rater: str
    image: str
    answer: Literal["real", "generated"]
    confidence: int = Field(ge=1, le=5)
    elapsed_ms: int | None = Field(default=None, ge=0)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(x for x in err.get("loc", ()) if isinstance(x, str) and x != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "malformed request: " + "; ".join(parts)


def create_app(study_dir: str | Path) -> FastAPI:
    study = Study(study_dir)
    app = FastAPI(title=f"augforge Turing test: {study.title}", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.study = study
    templates = Jinja2Templates(directory=HERE / "templates")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    size = int(study.meta["size"])

    def page(request: Request, name: str, code: int = 200, **ctx) -> HTMLResponse:
        ctx.setdefault("title", study.title)
        return templates.TemplateResponse(request, name, ctx, status_code=code, headers=NO_STORE)

    def error_page(request: Request, status: int, message: str) -> HTMLResponse:
        return page(request, "error.html", status, status=status, message=message)

    # ---- errors -------------------------------------------------------------------------
    def wants_json(request: Request) -> bool:
        return request.url.path.startswith(("/api/", "/img/"))

    @app.exception_handler(StudyError)
    async def study_error(request: Request, exc: StudyError):
        if wants_json(request):
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        return error_page(request, exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        msg = _validation_message(exc)
        if wants_json(request):
            return JSONResponse({"detail": msg}, status_code=422)
        return error_page(request, 422, msg)

    def admin_token(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.cookies.get(ADMIN_COOKIE)

    def require_admin(request: Request) -> None:
        token = admin_token(request)
        if not token:
            raise StudyError(401, "admin token required: send 'Authorization: Bearer TOKEN' or sign in at /admin")
        if not study.check_token(token):
            raise StudyError(403, "wrong admin token")

    # ---- JSON API -----------------------------------------------------------------------
    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.get("/api/study")
    def api_study():
        return {"title": study.title, "n_images": len(study.image_ids), "size": size, "specialties": list(SPECIALTIES)}

    @app.post("/api/raters")
    def api_sign_in(body: SignIn, request: Request):
        row, resumed = study.sign_in(body.rater, body.specialty, body.years, body.consent, request.headers.get("user-agent", ""))
        return JSONResponse({"resumed": resumed, **study.progress(row["id"])}, status_code=200 if resumed else 201)

    @app.get("/api/raters/{rater}/next")
    def api_next(rater: str):
        study.require_rater(rater)
        return study.progress(rater)

    @app.post("/api/answers", status_code=201)
    def api_answer(body: AnswerIn):
        return study.answer(body.rater, body.image, body.answer, body.confidence, body.elapsed_ms)

    @app.get("/api/admin/results")
    def api_results(request: Request):
        require_admin(request)
        from augforge.turing import results as results_mod  # pandas: imported on first use

        return results_mod.compute(study)

    @app.get("/api/admin/answers.csv")
    def api_csv(request: Request):
        require_admin(request)
        from augforge.turing import results as results_mod

        return PlainTextResponse(
            results_mod.csv_text(study), media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="turing_answers.csv"', **NO_STORE},
        )

    @app.api_route("/img/{image}", methods=["GET", "HEAD"])
    def image(image: str):
        # Same headers for every image (no ETag or Last-Modified: nothing but the pixels differ).
        data = study.image_path(image.removesuffix(".png")).read_bytes()
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    # ---- rater pages --------------------------------------------------------------------
    def current_rater(request: Request):
        rater = request.cookies.get(RATER_COOKIE)
        return study.rater(rater) if rater else None

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        return page(request, "index.html", n_images=len(study.image_ids), rater=current_rater(request))

    @app.get("/signin", response_class=HTMLResponse)
    def signin_form(request: Request, consent: str = ""):
        if consent != "yes":
            return RedirectResponse("/", status_code=303)
        return page(request, "signin.html", specialties=SPECIALTIES, form={})

    @app.post("/signin", response_class=HTMLResponse)
    async def signin(request: Request):
        form = await request.form()
        values = {k: str(form.get(k, "")).strip() for k in ("rater", "specialty", "years", "consent")}
        try:
            years = float(values["years"])
        except ValueError:
            return page(request, "signin.html", 422, specialties=SPECIALTIES, form=values,
                        error=f"years of experience must be a number, got {values['years']!r}")
        try:
            row, _ = study.sign_in(values["rater"], values["specialty"], years, values["consent"] == "yes",
                                   request.headers.get("user-agent", ""))
        except StudyError as exc:
            return page(request, "signin.html", exc.status, specialties=SPECIALTIES, form=values, error=exc.message)
        resp = RedirectResponse("/rate", status_code=303)
        resp.set_cookie(RATER_COOKIE, row["id"], max_age=180 * 86400, httponly=True, samesite="lax")
        return resp

    @app.get("/signout")
    def signout():
        resp = RedirectResponse("/", status_code=303)
        resp.delete_cookie(RATER_COOKIE)
        return resp

    @app.get("/rate", response_class=HTMLResponse)
    def rate_page(request: Request):
        row = current_rater(request)
        if row is None:
            return RedirectResponse("/", status_code=303)
        p = study.progress(row["id"])
        if p["done"]:
            return RedirectResponse("/done", status_code=303)
        return page(request, "rate.html", p=p, rater=row["id"], size=size)

    @app.post("/rate")
    async def rate_submit(request: Request):
        row = current_rater(request)
        if row is None:
            raise StudyError(401, "no rater: sign in first (your session cookie is missing)")
        form = await request.form()
        try:
            confidence = int(str(form.get("confidence", "")))
        except ValueError:
            raise StudyError(422, "malformed form: choose a confidence from 1 to 5") from None
        elapsed = str(form.get("elapsed_ms", "")).strip()
        study.answer(row["id"], str(form.get("image", "")), str(form.get("answer", "")), confidence,
                     int(elapsed) if elapsed.isdigit() else None)
        return RedirectResponse("/rate", status_code=303)

    @app.get("/done", response_class=HTMLResponse)
    def done(request: Request):
        row = current_rater(request)
        if row is None:
            return RedirectResponse("/", status_code=303)
        return page(request, "done.html", p=study.progress(row["id"]))

    # ---- admin --------------------------------------------------------------------------
    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request):
        token = request.cookies.get(ADMIN_COOKIE)
        if not token:
            return page(request, "admin_login.html")
        if not study.check_token(token):
            return page(request, "admin_login.html", 403, error="wrong admin token")
        from augforge.turing import results as results_mod

        res = results_mod.compute(study)
        return page(request, "results.html", r=res, pct=results_mod.pct)

    @app.post("/admin", response_class=HTMLResponse)
    async def admin_login(request: Request):
        token = str((await request.form()).get("token", "")).strip()
        if not study.check_token(token):
            return page(request, "admin_login.html", 403, error="wrong admin token")
        resp = RedirectResponse("/admin", status_code=303)
        resp.set_cookie(ADMIN_COOKIE, token, httponly=True, samesite="strict", max_age=12 * 3600)
        return resp

    @app.get("/admin/logout")
    def admin_logout():
        resp = RedirectResponse("/admin", status_code=303)
        resp.delete_cookie(ADMIN_COOKIE)
        return resp

    return app
