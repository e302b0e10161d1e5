"""`python -m bench`: the CPU benchmark (make bench); `--gpu`: the GPU model benchmark;
`--hostile`: the server under soak and abuse (make bench-hostile)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _names(text: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(values) - set(allowed))
    if unknown or not values:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {unknown or text!r}; choose from {', '.join(allowed)}"
        )
    return values


def _scenarios(text: str) -> tuple[str, ...]:
    from bench.hostile.level import SCENARIO_NAMES

    return _names(text, SCENARIO_NAMES, "scenario(s)")


def _allocators(text: str) -> tuple[str, ...]:
    from bench.hostile.common import ALLOCATORS

    return _names(text, ALLOCATORS, "allocator(s)")


def _systems(text: str) -> tuple[str, ...]:
    return _names(text, SYSTEMS, "system(s)")


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
    hostile = parser.add_argument_group("hostile level (--hostile; bench/hostile/)")
    hostile.add_argument(
        "--hostile", action="store_true", help="run the soak and abuse scenarios instead"
    )
    hostile.add_argument(
        "--scenarios",
        type=_scenarios,
        default=None,
        help="comma-separated subset of the scenarios (default: all)",
    )
    hostile.add_argument(
        "--soak-minutes", type=_positive_float, default=10.0, help="per allocator (default: 10)"
    )
    hostile.add_argument(
        "--allocators",
        type=_allocators,
        default=None,
        help="comma-separated glibc,jemalloc for the soak and the huge input "
        "(default: both where jemalloc is installed, else glibc)",
    )
    hostile.add_argument(
        "--abuse-seconds",
        type=_positive_float,
        default=30.0,
        help="how long the slow connections are kept going before they are counted (default: 30)",
    )
    hostile.add_argument(
        "--slow-connections",
        type=_positive_int,
        default=200,
        help="slowloris connections, and as many silent ones (default: 200)",
    )
    hostile.add_argument(
        "--server-src",
        type=Path,
        help="run `python -m service` from this source tree, e.g. an export of an older commit "
        "(git archive), for the figures before a change",
    )
    hostile.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="EMBED_X=value",
        help="a setting for every server of the level (repeatable)",
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
    if args.hostile:
        return _run_hostile(args, command.strip())
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


def _run_hostile(args: argparse.Namespace, command: str) -> int:
    from bench import machine
    from bench.hostile.common import HostileOptions, jemalloc_path
    from bench.hostile.level import SCENARIO_NAMES, run_level, write_report
    from bench.modelfiles import default_model_path
    from bench.procs import install_signal_handlers

    install_signal_handlers()
    settings = []
    for item in args.server_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("EMBED_"):
            raise SystemExit(f"--server-env {item!r}: expected EMBED_<SETTING>=value")
        settings.append((key, value))
    name = args.machine or machine.cpu_machine_name()
    allocators = args.allocators or (("glibc", "jemalloc") if jemalloc_path() else ("glibc",))
    options = HostileOptions(
        model=args.model or default_model_path(),
        log_dir=LOG_DIR / name,
        soak_s=args.soak_minutes * 60,
        allocators=allocators,
        abuse_s=args.abuse_seconds,
        slow_connections=args.slow_connections,
        server_src=args.server_src,
        server_env=tuple(settings),
    )
    results = run_level(options, args.scenarios or SCENARIO_NAMES)
    meta = {
        "command": command,
        "machine": name,
        "cpus": str(machine.cpu_count()),
        "server": str(args.server_src or "this checkout"),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    paths = write_report(results, meta, args.out / name)
    print(paths["markdown"].read_text())
    print(f"report: {paths['markdown']}\njson:   {paths['json']}")
    return 0


def _print_cold_start(cold_start: dict[str, float | None]) -> None:
    parts = [
        f"{key.removesuffix('_s')} {value:.1f} s" for key, value in cold_start.items() if value
    ]
    print("cold start: " + ", ".join(parts))


if __name__ == "__main__":
    raise SystemExit(main())
