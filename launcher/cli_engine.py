"""``embed`` and ``rerank``: run the engine once from the command line (also used to check it)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .cli import positive_int


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "embed",
        parents=[common],
        help="embed a text and/or images and print the vector",
        description="Embed a text and/or images with Qwen3-VL-Embedding and print the vector.",
    )
    p.add_argument("--text", help="text to embed")
    p.add_argument(
        "--image", action="append", default=[], metavar="PATH", help="image (repeatable)"
    )
    p.add_argument("--instruction", help="instruction (default: Represent the user's input.)")
    p.add_argument(
        "--dims", type=positive_int, help="Matryoshka dimensions (truncate, renormalise)"
    )
    p.add_argument("--max-pixels", type=positive_int, help="image pixel budget (lower is faster)")
    p.add_argument("--show-prompt", action="store_true", help="print the prompt to stderr")
    p.add_argument("--json", action="store_true", help='print {"dim", "embedding", "model"}')
    p.set_defaults(func=cmd_embed)

    r = sub.add_parser(
        "rerank",
        parents=[common],
        help="score documents against a query with the reranker",
        description="Score documents against a query with Qwen3-VL-Reranker (P(yes)).",
    )
    r.add_argument("--query", required=True, help="the query")
    r.add_argument(
        "--doc", action="append", default=[], metavar="TEXT", help="text document (repeatable)"
    )
    r.add_argument(
        "--doc-image",
        action="append",
        default=[],
        metavar="PATH",
        help="image document (repeatable)",
    )
    r.add_argument("--instruction", help="instruction (default: Given a search query, ...)")
    r.add_argument("--json", action="store_true", help='print {"scores": [...]} in document order')
    r.set_defaults(func=cmd_rerank)


def _engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"threads": args.threads, "gpu": args.gpu, "verbose": args.verbose}


def _embedder(args: argparse.Namespace) -> tuple[Any, str]:
    """The engine ``embed`` uses (local or ``--engine URL``) and the model's name."""
    from .embedder import Embedder
    from .engines import engine_settings
    from .images import MAX_PIXELS
    from .models import resolve

    remote = engine_settings(args.engine)
    if remote is not None:
        from .engines.remote import RemoteEmbedder

        emb = RemoteEmbedder(remote, max_pixels=args.max_pixels or MAX_PIXELS)
        return emb, emb.identity().model_file
    models = resolve(model=args.model, mmproj=args.mmproj, roles=("embedding",))
    model_path = models.require_embedding()
    local = Embedder(
        model_path,
        models.mmproj,  # loaded only when an image is embedded
        max_pixels=args.max_pixels or MAX_PIXELS,
        **_engine_kwargs(args),
    )
    return local, model_path.name


def cmd_embed(args: argparse.Namespace) -> int:
    from .inputs import EmbedInput

    item = EmbedInput(text=args.text, images=tuple(args.image), instruction=args.instruction)
    emb, name = _embedder(args)
    with emb:
        if args.show_prompt:
            print(emb.prompt_text(item), file=sys.stderr)
        vec = emb.embed([item], dims=args.dims)[0]
    if args.json:
        json.dump(
            {
                "dim": int(vec.shape[0]),
                "embedding": [float(x) for x in vec],
                "model": name,
            },
            sys.stdout,
        )
        sys.stdout.write("\n")
    else:
        head = ", ".join(f"{x:+.4f}" for x in vec[:8])
        print(f"{name}: {vec.shape[0]} dims, unit norm")
        print(f"[{head}, ...]")
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    from .inputs import RerankDoc
    from .models import resolve
    from .reranker import Reranker

    if not args.doc and not args.doc_image:
        raise SystemExit("launcher rerank: error: give at least one --doc or --doc-image")
    models = resolve(
        reranker=args.reranker or args.model, reranker_mmproj=args.mmproj, roles=("reranker",)
    )
    path = models.require_reranker()
    docs = [RerankDoc(text=t) for t in args.doc] + [RerankDoc(images=(p,)) for p in args.doc_image]
    with Reranker(
        path, models.reranker_mmproj, instruction=args.instruction, **_engine_kwargs(args)
    ) as rr:
        scores = rr.score(args.query, docs)
        method = rr.method
    print(f"reranker: {path.name} ({method})", file=sys.stderr)
    if args.json:
        json.dump({"scores": scores, "method": method, "model": path.name}, sys.stdout)
        sys.stdout.write("\n")
    else:
        labels = [f"doc: {t}" for t in args.doc] + [f"image: {p}" for p in args.doc_image]
        for score, label in sorted(zip(scores, labels, strict=True), key=lambda x: -x[0]):
            print(f"{score:.4f}  {label[:100]}")
    return 0
