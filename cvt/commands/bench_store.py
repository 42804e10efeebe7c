"""``cvt bench store``: the exposure format's codecs and chunk sizes, measured on a simulated
CCD (``core.bench.chunks``): encode and decode time and size per codec, and write, local read
and viewport-over-HTTP time per chunk size."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument(
        "--latency-ms", type=float, default=30.0, help="HTTP round trip added per request"
    )
    parser.add_argument("--no-chunks", action="store_true", help="codecs only")


def run(args) -> int:
    from core.bench import chunks

    levels = chunks.simulated_levels()
    print("codecs (one thread, one CCD's 512 x 512 chunks):")
    print(chunks.format_codecs(chunks.codec_table(levels)))
    if not args.no_chunks:
        print("\nchunk sizes (local disk; a 1600 x 1000 viewport over HTTP, 0 and "
              f"{args.latency_ms:.0f} ms a request):")
        chunks.run(delays=(0.0, args.latency_ms / 1e3), levels=levels)
    return 0
