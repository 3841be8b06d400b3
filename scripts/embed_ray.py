"""Embed a corpus on a Ray cluster with Ray Data: read, map_batches(MinibertEmbedder), write Parquet.

    python scripts/embed_ray.py corpus.parquet vectors/ --text-column text
    python scripts/embed_ray.py 's3://bucket/corpus/*.jsonl' s3://bucket/vectors/ --address auto --concurrency 32

Without --address it starts a local Ray instance on this machine. With --address auto (or
ray://head:10001) it joins an existing cluster: each of --concurrency actors loads its own Encoder on a
node of the cluster, reads its share of the input blocks and writes one Parquet file per block, so
output files appear as blocks finish. Recovery is Ray's: a failed task or actor is retried (Ray Data's
defaults), and a rerun rewrites the output folder. For one machine, `minibert embed -o DIR/ --resume`
keeps shards across crashes instead.
"""

from __future__ import annotations

import argparse


def main() -> None:
    import ray

    from minibert.corpus.ray import MinibertEmbedder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="a file, folder or glob: .txt (one text per line), .jsonl/.json or .parquet")
    parser.add_argument("output", help="a folder for the Parquet output")
    parser.add_argument("--address", help="an existing cluster (auto, or ray://host:10001); default: local")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="Encoder actors, each taking --threads CPUs; leave CPUs for reading (default: 1)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="rows per map_batches batch (default: 256)")
    parser.add_argument("--text-column", default="text", help="the column holding the text (default: text)")
    parser.add_argument("--model", help="model folder or Hub id (default: all-MiniLM-L6-v2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per actor (default: 1)")
    args = parser.parse_args()

    ray.init(address=args.address)
    path = args.input
    if path.endswith(".parquet"):
        ds = ray.data.read_parquet(path)
    elif path.endswith((".jsonl", ".json")):
        ds = ray.data.read_json(path)
    else:
        ds = ray.data.read_text(path)  # one row per line, in column "text"
    ds = ds.map_batches(
        MinibertEmbedder,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        num_cpus=args.threads,
        fn_constructor_kwargs={"model": args.model, "text_column": args.text_column, "threads": args.threads},
    )
    ds.write_parquet(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
