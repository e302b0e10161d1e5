"""`python -m bench`: the CPU benchmark (make bench); `--gpu`: the GPU model benchmark."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.corpus import CORPUS_KINDS
from bench.stats import SYSTEMS

DEFAULT_CONCURRENCY = (1, 4, 16, 64, 256)
RESULTS_DIR = Path(__file__).resolve().parent / "results"
LOG_DIR = Path("build") / "bench"
"""Server logs of the last run (under the ignored build/ folder: useful, not worth committing)."""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _systems(text: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(values) - set(SYSTEMS))
    if unknown or not values:
        raise argparse.ArgumentTypeError(
            f"unknown system(s) {unknown or text!r}; choose from {', '.join(SYSTEMS)}"
        )
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--gpu", action="store_true", help="run the GPU model benchmark instead")
    parser.add_argument("--model", help="model folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--model-name", help="name used in the report and requests")
    parser.add_argument(
        "--machine", help="results folder name (default: derived from the hardware)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results root folder")
    parser.add_argument(
        "--corpus", choices=CORPUS_KINDS, default="short", help="input lengths (bench/corpus.py)"
    )
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        default=DEFAULT_CONCURRENCY,
        help="comma-separated client counts (default: 1,4,16,64,256)",
    )
    parser.add_argument(
        "--systems",
        type=_systems,
        default=SYSTEMS,
        help="comma-separated subset of limit,server,naive (default: all)",
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        default=5,
        help="paired rounds per concurrency: each round runs every system once, back to back, "
        "and the key ratios are the median over rounds (default: 5)",
    )
    parser.add_argument(
        "--requests",
        type=_positive_int,
        help="measured requests per round, after max(32, 4 x clients) warm-up requests "
        "(default: max(100, 8 x clients)); rounded up to a multiple of the clients",
    )
    parser.add_argument("--encoding-format", choices=("float", "base64"), default="float")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument(
        "--level-budget",
        type=float,
        default=60.0,
        help="seconds per system and concurrency, split evenly over the rounds: a round's "
        "warm-up and then its measured part each stop sending after that share (default: 60)",
    )
    parser.add_argument(
        "--mixed-concurrency",
        type=int,
        default=64,
        help="also run the limit and our server on the mixed corpus at this concurrency "
        "(0: not; default: 64)",
    )
    parser.add_argument(
        "--overhead-rounds",
        type=int,
        default=5,
        help="rounds of the serving-overhead level: the tiny-model server against the framework "
        "floor (0: not run; default: 5)",
    )
    parser.add_argument(
        "--fairness-bulk",
        type=int,
        default=384,
        help="inputs of the fairness probe's bulk request (0: not run; default: 384)",
    )
    gpu = parser.add_argument_group("GPU mode")
    gpu.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16")
    gpu.add_argument("--seq-lens", type=_int_list, default=(128, 512))
    gpu.add_argument("--tokens-per-batch", type=_int_list, default=(16384, 32768, 65536))
    gpu.add_argument("--compile", action="store_true", help="also measure torch.compile")
    gpu.add_argument("--peak-tflops", type=float, help="dense bf16 peak, when the GPU is unknown")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.gpu:
        from bench import gpu

        return gpu.main(args, RESULTS_DIR if args.out is None else args.out, command.strip())
    return _run_cpu(args, command.strip())


def _run_cpu(args: argparse.Namespace, command: str) -> int:
    from bench import machine
    from bench.modelfiles import default_model_path
    from bench.procs import install_signal_handlers
    from bench.report import write_report
    from bench.suite import SuiteOptions, run_suite

    install_signal_handlers()
    model = args.model or default_model_path()
    name = args.machine or machine.cpu_machine_name()
    options = SuiteOptions(
        model=model,
        model_name=args.model_name
        or ("all-MiniLM-L6-v2" if args.model is None else Path(model).name),
        out_dir=args.out / name,
        log_dir=LOG_DIR / name,
        machine=name,
        corpus=args.corpus,
        seed=args.seed,
        concurrency=args.concurrency,
        systems=args.systems,
        rounds=args.rounds,
        requests=args.requests,
        encoding_format=args.encoding_format,
        timeout_s=args.timeout,
        level_budget_s=args.level_budget,
        command=command,
        mixed_concurrency=args.mixed_concurrency or None,
        overhead_rounds=args.overhead_rounds,
        fairness_bulk=args.fairness_bulk,
    )
    report = run_suite(options)
    paths = write_report(report, options.out_dir)
    print(f"\nreport: {paths['markdown']}\nplot:   {paths['plot']}\njson:   {paths['json']}")
    _print_cold_start(report.cold_start)
    print("\nkey ratios:")
    for ratio in report.ratios():
        if ratio.measured:
            print("  " + ratio.line())
    return 0


def _print_cold_start(cold_start: dict[str, float | None]) -> None:
    parts = [
        f"{key.removesuffix('_s')} {value:.1f} s" for key, value in cold_start.items() if value
    ]
    print("cold start: " + ", ".join(parts))


if __name__ == "__main__":
    raise SystemExit(main())
