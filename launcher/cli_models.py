"""``launcher models``: list the GGUF files found and the ones in use; ``models pull``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .errors import LauncherError


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "models",
        parents=[common],
        help="list model files and the ones in use; `models pull` downloads them",
        description="List the GGUF files found (role from their metadata) and which ones are used.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list of the files")
    p.add_argument("--dir", action="append", metavar="DIR", help="look in DIR instead (repeatable)")
    if not _has_option(common, "--reranker-mmproj"):
        p.add_argument("--reranker-mmproj", help="reranker's vision projector GGUF")
    p.set_defaults(func=_list)
    actions = p.add_subparsers(dest="models_action", metavar="ACTION")
    pull = actions.add_parser(
        "pull",
        help="download the default models from the Hugging Face hub",
        description="Download Qwen3-VL-Embedding-2B and Qwen3-VL-Reranker-2B (each with mmproj).",
    )
    pull.add_argument("--no-reranker", action="store_true", help="only the embedding model")
    pull.add_argument("--dest", metavar="DIR", help="download into DIR (default: the data folder)")
    pull.add_argument("--quant", default=None, help="embedding quantization (default Q4_K_M)")
    pull.add_argument("--no-progress", action="store_true", help="no progress bars")
    pull.set_defaults(func=_pull)


def _has_option(parser: argparse.ArgumentParser, option: str) -> bool:
    return any(option in a.option_strings for a in parser._actions)


def device_line(gpu: Any, threads: int | None) -> str:
    """Where the models would run and why: ``CPU: AMD EPYC (AVX-512, 2 threads) [auto: ...]``."""
    from .native import physical_cores, resolve_device

    device = resolve_device(gpu)
    return f"{device.describe(threads or physical_cores())} [{device.why}]"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _list(args: argparse.Namespace) -> int:
    from . import models

    dirs = args.dir or None
    found = models.discover(dirs)
    error: LauncherError | None = None
    resolved: models.ResolvedModels | None = None
    try:
        resolved = models.resolve(
            args.model,
            args.mmproj,
            args.reranker,
            getattr(args, "reranker_mmproj", None),
            dirs=dirs,
        )
    except LauncherError as err:
        error = err

    used: dict[Path, list[str]] = {}
    extra: list[models.ModelFile] = []
    known = {m.path for m in found}
    if resolved is not None:
        for slot in models.SLOTS:
            mf = resolved.file(slot)
            if mf is None:
                continue
            used.setdefault(mf.path, []).append(slot)
            if mf.path not in known:
                known.add(mf.path)
                extra.append(mf)
    files = [*found, *extra]

    if args.json:
        rows: list[dict[str, Any]] = []
        for m in files:
            row = m.to_dict()
            row["used_as"] = used.get(m.path, [])
            rows.append(row)
        print(json.dumps(rows, indent=2))
        if error is not None:
            raise error
        return 0

    if not files:
        searched = ", ".join(str(d) for d in (dirs or models.default_model_dirs()))
        print(f"No GGUF files in {searched}.")
    for m in files:
        detail = []
        if m.quant:
            detail.append(m.quant)
        if m.n_embd:
            detail.append(f"n_embd {m.n_embd}")
        if m.projection_dim:
            detail.append(f"projects to {m.projection_dim}")
        slots = used.get(m.path)
        mark = f"  <- {', '.join(slots)}" if slots else ""
        print(
            f"{m.role:<10} {_size(m.size_bytes):>9}  {m.name or m.path.name}"
            + (f" ({', '.join(detail)})" if detail else "")
            + mark
        )
        print(f"{'':<10} {'':>9}  {m.path}")
        if m.reason:
            print(f"{'':<10} {'':>9}  note: {m.reason}")
    if resolved is not None:
        print()
        print("In use:")
        for slot in models.SLOTS:
            mf = resolved.file(slot)
            source = resolved.sources.get(slot)
            shown = f"{mf.path} ({source})" if mf else ("off" if source == "off" else "-")
            print(f"  {slot:<16} {shown}")
        cfg = resolved.config_path
        if cfg is not None:
            print(f"  {'config':<16} {cfg}" + ("" if cfg.is_file() else " (not present)"))
        from .native import model_ftype, resolve_extra_bufts

        ftype = model_ftype(resolved.model) if resolved.model else None
        bufts = resolve_extra_bufts(ftype=ftype).describe()
        print(f"  {'repack/AMX':<16} extra buffer types {bufts}")
        print(f"  {'device':<16} {device_line(args.gpu, args.threads or resolved.threads)}")
        if resolved.model is None and resolved.sources.get("model") != "off":
            print(f"\nNo embedding model: {models.PULL_HINT}.")
    if error is not None:
        raise error
    return 0


def _pull(args: argparse.Namespace) -> int:
    from . import models

    if args.dest is None:
        # Files already in place (put there by hand, or by an earlier pull) need no network.
        roles = ("embedding",) if args.no_reranker else ("embedding", "reranker")
        have = models.resolve(roles=roles)
        wanted = [have.model, have.mmproj] + ([] if args.no_reranker else [have.reranker])
        if all(wanted):
            print("models already in place (see `launcher.py models`):", file=sys.stderr)
            for p in wanted:
                print(p)
            return 0
    paths = models.pull(
        args.dest,
        include_reranker=not args.no_reranker,
        progress=not args.no_progress,
        quant=args.quant or models.DEFAULT_QUANT,
    )
    for p in paths:
        print(p)
    return 0
