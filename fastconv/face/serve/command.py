"""``fastconv face serve``: argument parsing and start-up (``add_serve_command(subparsers)``)."""
from __future__ import annotations

import os

__all__ = ["add_serve_command", "cmd_serve", "build_app"]


def add_serve_command(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="web page and REST API for verification and identification, with a SQLite gallery",
        description="Serve the page at http://HOST:PORT/ and the API under /api/v1 (OpenAPI docs at /docs). "
                    "Photos are framed like LFW (largest face found by OpenCV's Haar cascade, box enlarged "
                    "2.2x to a 250x250 crop) and then preprocessed as the model was trained.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", "-c", help="checkpoint written by `fastconv face train` (runs on torch)")
    src.add_argument("--model", help="converted model.npz (runs on fastconv's engine, no torch)")
    p.add_argument("--gallery", default="gallery.db", help="SQLite gallery file (default gallery.db; created if new)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None,
                   help="require this x-api-key header on every /api route (default $FASTCONV_API_KEY, else none)")
    p.add_argument("--scorer", choices=["auto", "cosine", "plda"], default="auto",
                   help="how verify and identify score a pair: cosine of the embeddings (threshold in [-1, 1]) or "
                        "the PLDA back-end stored in the checkpoint / model.npz (scores and threshold are natural-log "
                        "likelihood ratios); auto = plda when one is stored (default), as `fastconv face verify`")
    p.add_argument("--threshold", type=float, default=None,
                   help="threshold on the scorer's scale (default: the model's stored one for that scorer)")
    p.add_argument("--no-detect", action="store_true",
                   help="take images as LFW-style 250x250 crops by default (requests may still say detect=true)")
    p.add_argument("--max-image-mb", type=float, default=10.0, help="largest accepted image, MB (default 10)")
    p.add_argument("--workers", type=int, default=2, help="inference threads (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default torch's)")
    p.add_argument("--index", choices=["exact", "ivf"], default="exact",
                   help="identify by exact search (default) or, for large galleries, a faiss IVF index whose "
                        "candidates are ranked exactly (needs the ann extra)")
    p.add_argument("--index-min-faces", type=int, default=100_000,
                   help="with --index ivf: build the index once the gallery has this many faces (default 100000)")
    p.add_argument("--nprobe", type=int, default=256,
                   help="with --index ivf: cells searched per query (default 256: recall@10 0.87 on 1M faces, README)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="torch device (default cpu)")
    p.set_defaults(func=cmd_serve)


def build_app(args):
    """-> (FastAPI app, embedder, gallery) for parsed ``serve`` arguments; ValueError on bad input."""
    from .app import create_app
    from .embedder import open_embedder
    from .gallery import Gallery

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if not 0 < args.max_image_mb <= 1024:
        raise ValueError(f"--max-image-mb must be in (0, 1024], got {args.max_image_mb}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    api_key = args.api_key if args.api_key is not None else os.environ.get("FASTCONV_API_KEY") or None
    embedder = open_embedder(checkpoint=args.checkpoint, model=args.model, threshold=args.threshold,
                             device=args.device, threads=args.threads, scorer=args.scorer)
    index = None
    if args.index == "ivf":
        from .ann import IVFIndex

        index = IVFIndex(embedder.embedding_size, nprobe=args.nprobe)
    gallery = Gallery(args.gallery, embedder.model_id, embedder.embedding_size, index=index,
                      index_min_faces=args.index_min_faces)
    app = create_app(embedder, gallery, api_key=api_key, detect=not args.no_detect,
                     max_bytes=int(args.max_image_mb * 1024 * 1024), workers=args.workers,
                     gallery_path=os.path.abspath(args.gallery))
    return app, embedder, gallery


def cmd_serve(args) -> int:
    """Bad input raises ValueError/OSError (``cli.run_command`` turns it into ``error: ...``, exit 2)."""
    try:
        import uvicorn
    except ImportError as exc:
        raise RuntimeError(f"{exc}: fastconv face serve needs the serve extra (pip install 'fastconv[serve]')") from None
    app, embedder, gallery = build_app(args)
    print(f"model {embedder.model_id} on {embedder.engine}, {embedder.scorer.name} scorer, threshold "
          f"{embedder.threshold:.4f} ({embedder.threshold_kind}, {embedder.threshold_source}); gallery {args.gallery}: {len(gallery)} faces", flush=True)
    print(f"serving http://{args.host}:{args.port}/ (API docs at /docs)", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        gallery.close()
    return 0
