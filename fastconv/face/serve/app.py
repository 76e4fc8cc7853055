"""The ASGI app of ``fastconv face serve``: the web page at ``/`` and the REST API under ``/api/v1``.

``create_app(embedder, gallery, ...)`` -> FastAPI. Images come as multipart files or as base64
strings (or data URLs) in a JSON body; field names as deepface's (``img1``, ``img2`` for verify,
``img`` elsewhere). Options in the same form / JSON: ``detect`` (bool, default the server's),
``crops`` (bool: return the 250x250 crops as JPEG data URLs), ``top_k`` (identify, 1..100).

Verify and identify score with the embedder's ``scorer`` (cosine, or the model's PLDA back-end:
natural-log likelihood ratios); every answer says which (``scorer``, ``threshold_kind``).

Every error is a JSON body ``{"error": {"code", "message"}}`` with a 4xx status (401 wrong key,
404 unknown subject/face, 409 subject exists, 413 too large, 415 not JPEG/PNG/WebP, 422 bad
field / corrupt image / no face, 503 busy). Decoding, detection and the model run in a bounded
thread pool, off the event loop; at most ``max_pending`` requests wait for it.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import pathlib
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import schemas
from .gallery import Conflict, NotFound
from .pipeline import prepare_face
from .uploads import BadUpload, decode_base64

__all__ = ["create_app", "DEFAULT_MAX_BYTES"]

log = logging.getLogger(__name__)
STATIC = pathlib.Path(__file__).parent / "static"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
_OPTION_FIELDS = ("detect", "crops", "top_k")


def _error(status, code, message):
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _body_doc(*image_fields, extra=None):
    """OpenAPI ``requestBody`` for routes that take images as multipart files or base64 JSON."""
    opts = {"detect": {"type": "boolean"}, "crops": {"type": "boolean"}, **(extra or {})}
    files = {f: {"type": "string", "format": "binary"} for f in image_fields}
    b64 = {f: {"type": "string", "description": "base64 or data:image/...;base64, URL"} for f in image_fields}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": list(image_fields),
                                           "properties": {**files, **opts}}},
        "application/json": {"schema": {"type": "object", "required": list(image_fields),
                                        "properties": {**b64, **opts}}}}}}


class _BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes (Content-Length or counted) with 413."""

    def __init__(self, app, limit):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _error(413, "request_too_large", f"request body of {int(declared)} bytes is over the "
                                f"limit of {self.limit} bytes")(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BadUpload(413, "request_too_large", f"request body is over the limit of {self.limit} bytes")
            return message

        return await self.app(scope, counted, send)


def _as_bool(value, field):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise BadUpload(422, "bad_field", f"{field}: expected true or false, got {value!r}")


def _as_top_k(value):
    try:
        k = int(value)
        if isinstance(value, bool) or (isinstance(value, float) and value != k):
            raise ValueError
    except (TypeError, ValueError):
        raise BadUpload(422, "bad_field", f"top_k: expected an integer, got {value!r}") from None
    if not 1 <= k <= 100:
        raise BadUpload(422, "bad_field", f"top_k must be in 1..100, got {k}")
    return k


async def _read_images(request: Request, fields, max_bytes):
    """-> ({field: bytes}, {option: raw value}) from a multipart form or a JSON body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    images, options = {}, {}
    if ctype == "multipart/form-data":
        async with request.form(max_files=len(fields), max_fields=len(fields) + len(_OPTION_FIELDS)) as form:
            for f in fields:  # the form's temporary files are closed when the block ends
                v = form.get(f)
                if v is None:
                    raise BadUpload(422, "missing_field", f"{f}: missing (send it as a file field)")
                if isinstance(v, UploadFile):
                    data = await v.read(max_bytes + 1)
                else:
                    data = decode_base64(v, f, max_bytes)
                images[f] = data
            options = {k: form[k] for k in _OPTION_FIELDS if k in form and isinstance(form[k], str)}
    elif ctype == "application/json":
        try:
            body = json.loads(await request.body())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadUpload(422, "bad_json", f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadUpload(422, "bad_json", "request body must be a JSON object")
        for f in fields:
            if f not in body:
                raise BadUpload(422, "missing_field", f"{f}: missing (a base64 string)")
            images[f] = decode_base64(body[f], f, max_bytes)
        options = {k: body[k] for k in _OPTION_FIELDS if k in body}
    else:
        raise BadUpload(415, "unsupported_media_type",
                        f"send images as multipart/form-data or application/json, not {ctype or 'no content type'}")
    return images, options


def _search_kind(gallery) -> str:
    ix = gallery.index
    if ix is None:
        return "exact"
    if not ix.built:
        return f"exact (faiss IVF from {gallery.index_min_faces} faces)"
    return f"faiss IVF (nlist {ix.nlist}, nprobe {min(ix.nprobe, ix.nlist)}), candidates ranked exactly"


def create_app(embedder, gallery, *, api_key=None, detect=True, max_bytes=DEFAULT_MAX_BYTES, workers=2,
               max_pending=64, detector=None, gallery_path=None) -> FastAPI:
    """The service for ``embedder`` (see :mod:`.embedder`) and ``gallery`` (:class:`.gallery.Gallery`)."""
    if workers < 1 or max_pending < 1 or max_bytes < 1:
        raise ValueError("workers, max_pending and max_bytes must be >= 1")
    if detect and detector is None:
        from ..detect import default_detector

        detector = default_detector()  # load the cascade now, not on the first request
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastconv-serve")
    pending = asyncio.Semaphore(max_pending)
    model = {"model": embedder.model_id, "engine": embedder.engine}
    scoring = {"scorer": embedder.scorer.name, "threshold": embedder.threshold,
               "threshold_kind": embedder.threshold_kind}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="fastconv face serve", version="1", lifespan=lifespan,
                  description="Face verification and identification on a fastconv face model.")
    app.state.pool, app.state.embedder, app.state.gallery = pool, embedder, gallery

    async def in_pool(fn, *args):
        if pending.locked():
            raise BadUpload(503, "busy", f"server busy: {max_pending} requests are already waiting")
        async with pending:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def faces_of(images, options):
        """(in the pool) {field: bytes} -> (PreparedFace list, embeddings float32 (F, D))."""
        use_detect = _as_bool(options["detect"], "detect") if "detect" in options else detect
        crops = _as_bool(options.get("crops", False), "crops")
        faces = [prepare_face(data, f, detect=use_detect, crop=embedder.crop, size=embedder.size,
                              max_bytes=max_bytes, want_crop=crops, detector=detector) for f, data in images.items()]
        return faces, embedder.embed(np.stack([f.pixels for f in faces]))

    def face_json(f):
        return {"box": f.box.to_dict(), "detected": f.detected, "crop": f.crop_url}

    async def check_key(request: Request):
        if api_key is not None:
            given = request.headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                raise BadUpload(401, "unauthorized", "missing or wrong x-api-key header")

    api = APIRouter(prefix="/api/v1", dependencies=[Depends(check_key)])

    @api.get("/health", response_model=schemas.Health)
    async def health():
        return {**model, **scoring, "threshold_source": embedder.threshold_source,
                "embedding_size": embedder.embedding_size, "input_size": embedder.size, "detect": detect,
                "max_image_bytes": max_bytes,
                "gallery": {"path": gallery_path or gallery.path, "subjects": gallery.n_subjects,
                            "faces": len(gallery), "search": _search_kind(gallery)}}

    @api.post("/verify", response_model=schemas.VerifyResponse, openapi_extra=_body_doc("img1", "img2"))
    async def verify(request: Request):
        t0 = time.perf_counter()
        images, options = await _read_images(request, ("img1", "img2"), max_bytes)
        faces, e = await in_pool(faces_of, images, options)
        score = float(embedder.scorer.score(e[:1], e[1:])[0])
        return {"verified": score >= embedder.threshold, "similarity": score, **scoring,
                "faces": [face_json(f) for f in faces], **model,
                "time_ms": 1000 * (time.perf_counter() - t0)}

    @api.post("/represent", response_model=schemas.RepresentResponse, openapi_extra=_body_doc("img"))
    async def represent(request: Request):
        t0 = time.perf_counter()
        images, options = await _read_images(request, ("img",), max_bytes)
        faces, e = await in_pool(faces_of, images, options)
        return {"embedding": e[0].tolist(), "box": faces[0].box.to_dict(), "detected": faces[0].detected, **model,
                "time_ms": 1000 * (time.perf_counter() - t0)}

    @api.post("/subjects", response_model=schemas.Subject, status_code=201)
    async def add_subject(body: schemas.SubjectIn):
        try:
            return await in_pool(gallery.add_subject, body.name)
        except Conflict as exc:
            raise BadUpload(409, "subject_exists", str(exc)) from None
        except ValueError as exc:
            raise BadUpload(422, "bad_name", str(exc)) from None

    @api.get("/subjects", response_model=schemas.SubjectList)
    async def list_subjects():
        return {"subjects": await in_pool(gallery.subjects), "n_faces": len(gallery)}

    @api.delete("/subjects/{name}", response_model=schemas.SubjectDeleted)
    async def delete_subject(name: str):
        try:
            n = await in_pool(gallery.delete_subject, name)
        except NotFound as exc:
            raise BadUpload(404, "no_subject", str(exc)) from None
        return {"deleted": name, "faces_deleted": n}

    @api.post("/subjects/{name}/faces", response_model=schemas.FaceAdded, status_code=201,
              openapi_extra=_body_doc("img"))
    async def add_face(name: str, request: Request):
        from .gallery import image_digest

        try:
            await in_pool(gallery.faces_of, name)  # refuse before reading the image
        except NotFound as exc:
            raise BadUpload(404, "no_subject", str(exc)) from None
        images, options = await _read_images(request, ("img",), max_bytes)
        faces, e = await in_pool(faces_of, images, options)
        digest = image_digest(images["img"])
        try:
            face_id = await in_pool(gallery.add_face, name, e[0], digest)
        except NotFound as exc:  # deleted meanwhile
            raise BadUpload(404, "no_subject", str(exc)) from None
        f = faces[0]
        return {"face_id": face_id, "subject": name, "box": f.box.to_dict(), "detected": f.detected,
                "image_sha256": digest, "crop": f.crop_url}

    @api.delete("/faces/{face_id}", response_model=schemas.FaceDeleted)
    async def delete_face(face_id: int):
        try:
            await in_pool(gallery.delete_face, face_id)
        except NotFound as exc:
            raise BadUpload(404, "no_face", str(exc)) from None
        return {"deleted": face_id}

    @api.post("/identify", response_model=schemas.IdentifyResponse,
              openapi_extra=_body_doc("img", extra={"top_k": {"type": "integer", "minimum": 1, "maximum": 100}}))
    async def identify(request: Request):
        t0 = time.perf_counter()
        images, options = await _read_images(request, ("img",), max_bytes)
        top_k = _as_top_k(options.get("top_k", 5))
        faces, e = await in_pool(faces_of, images, options)
        hits = await in_pool(gallery.search, e[0], top_k, embedder.scorer)
        thr = embedder.threshold
        results = [{"subject": h.subject, "similarity": h.similarity, "face_id": h.face_id,
                    "accepted": h.similarity >= thr} for h in hits]
        accepted = bool(results) and results[0]["accepted"]
        return {"results": results, "accepted": accepted, "subject": results[0]["subject"] if accepted else None,
                **scoring, "gallery_faces": len(gallery),
                "face": face_json(faces[0]), **model, "time_ms": 1000 * (time.perf_counter() - t0)}

    app.include_router(api)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(BadUpload)
    async def _bad_upload(request, exc: BadUpload):
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        parts = ["/".join(str(p) for p in e.get("loc", ())) + ": " + e.get("msg", "") for e in exc.errors()]
        return _error(422, "bad_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):  # a bug, not bad input: logged, still JSON
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, "internal", f"internal error: {type(exc).__name__}")

    app.add_middleware(_BodyLimit, limit=3 * max_bytes + (1 << 20))  # two base64 images plus form overhead
    return app
