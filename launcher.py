#!/usr/bin/env python3
"""Thin shim so ``python launcher.py ...`` works from a checkout."""

from launcher.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
