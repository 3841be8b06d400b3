"""The `minibert` command line."""

from __future__ import annotations

import argparse

import minibert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minibert",
        description="A readable BERT encoder: embeddings, similarity and tokenization from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"minibert {minibert.__version__}")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0
