"""Parse-time benchmark: a dags folder of N route files vs dag-factory 1.1 building the same DAGs.

Run ``.venv/bin/python bench/parse.py`` (see ``--help``). Every measurement is a fresh Python
process ("cold process") that imports Airflow and the package, then times
``DagBag(dag_folder=<folder>)`` and checks the DAGs it got. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOADER = REPO / "dags" / "dataflow_routes.py"
TASKS_PER_DAG = 6  # extract, route, deliver x3, commit
RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"

ROUTE_TEMPLATE = """\
# Generated route {i}: a file source, 3 rules, 3 destinations.
{route_key}description: Generated route {i}
schedule: "@daily"
start_date: 2024-01-01
tags: [bench, sales]
retries: 2
retry_delay: 5m
params:
  min_amount: {{type: number, default: 100, description: Orders above this amount are big}}
source:
  type: file
  path: data/orders_{i}.jsonl
rules:
  - name: big
    priority: 10
    when: {{path: $.amount, gt: "{{{{ params.min_amount }}}}"}}
    to: [big_orders]
  - name: eu
    when:
      any:
        - {{path: $.customer.country, in: [DE, FR, IT, ES, NL]}}
        - all:
            - {{path: $.customer.eu, eq: true}}
            - {{path: $.amount, gte: 10}}
    transform:
      - select: {{id: $.id, customer: $.customer.name, country: $.customer.country, amount: $.amount}}
      - cast: {{amount: float}}
    to: [eu_orders]
  - name: flagged
    when: {{path: $.flag, exists: true}}
    to: [rest]
unmatched: [rest]
destinations:
  big_orders: {{type: file, path: "out/big_orders_{i}/{{{{ ds }}}}.jsonl"}}
  rest: {{type: file, path: out/rest_{i}.csv}}
  eu_orders: {{type: database, connection: dwh, table: eu_orders_{i}, mode: upsert, key: [id]}}
"""

DAGFACTORY_TEMPLATE = """\
# Generated DAG {i}: same shape, schedule, tags, params and default_args as route_{i:04d}.
{dag_id}:
  description: Generated route {i}
  schedule: "@daily"
  start_date: 2024-01-01
  catchup: false
  max_active_runs: 1
  tags: [bench, dataflow, sales]
  default_args:
    retries: 2
    retry_delay: {{__type__: datetime.timedelta, minutes: 5}}
  params:
    min_amount:
      __type__: airflow.sdk.Param
      __args__: [100]
      type: number
      description: Orders above this amount are big
  tasks:
    - task_id: extract
      operator: airflow.providers.standard.operators.empty.EmptyOperator
    - task_id: route
      operator: airflow.providers.standard.operators.empty.EmptyOperator
      dependencies: [extract]
    - task_id: deliver_big_orders
      operator: airflow.providers.standard.operators.empty.EmptyOperator
      dependencies: [route]
    - task_id: deliver_rest
      operator: airflow.providers.standard.operators.empty.EmptyOperator
      dependencies: [route]
    - task_id: deliver_eu_orders
      operator: airflow.providers.standard.operators.empty.EmptyOperator
      dependencies: [route]
    - task_id: commit
      operator: airflow.providers.standard.operators.empty.EmptyOperator
      trigger_rule: none_failed
      dependencies: [route, deliver_big_orders, deliver_rest, deliver_eu_orders]
"""

DAGFACTORY_LOADER = """\
# Airflow DAGs from YAML with dag-factory (the words "airflow" and "dag" keep safe mode happy).
import dagfactory; dagfactory.load_yaml_dags(globals_dict=globals(), dags_folder={folder!r})
"""


def route_id(i: int) -> str:
    return f"route_{i:04d}"


def renamed_index(n: int) -> int:
    """The one generated route whose ``route:`` key differs from its file name."""
    return n // 2


def renamed_id(i: int) -> str:
    return f"renamed_{i:04d}"


def write_routes(folder: Path, n: int) -> None:
    """N ``*.route.yaml`` files plus a copy of the loader; one route renames itself."""
    folder.mkdir(parents=True)
    shutil.copy(LOADER, folder / LOADER.name)
    for i in range(n):
        key = f"route: {renamed_id(i)}\n" if i == renamed_index(n) and n > 1 else ""
        text = ROUTE_TEMPLATE.format(i=i, route_key=key)
        (folder / f"{route_id(i)}.route.yaml").write_text(text, encoding="utf-8")


def write_dagfactory(folder: Path, n: int) -> None:
    """N dag-factory YAML files of the same DAG shape plus a one-line loader."""
    folder.mkdir(parents=True)
    (folder / "dagfactory_loader.py").write_text(
        DAGFACTORY_LOADER.format(folder=str(folder)), encoding="utf-8"
    )
    for i in range(n):
        text = DAGFACTORY_TEMPLATE.format(i=i, dag_id=route_id(i))
        (folder / f"{route_id(i)}.yaml").write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- child process


def child_main(
    kind: str, folder: str, expected: int, only: str | None, profile: str | None
) -> None:
    """Time imports and the DagBag fill in this (fresh) process; print one JSON line."""
    start = time.perf_counter()
    import airflow
    from airflow.dag_processing.dagbag import DagBag

    airflow_done = time.perf_counter()
    if kind == "ours":
        import airflow_dataflow.loader
        import airflow_dataflow.operators.branch
        import airflow_dataflow.operators.commit
        import airflow_dataflow.operators.deliver
        import airflow_dataflow.operators.extract  # noqa: F401
    else:
        import airflow.providers.standard.operators.empty  # noqa: F401
        import dagfactory  # noqa: F401
    package_done = time.perf_counter()

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    fill_start = time.perf_counter()
    bag = DagBag(dag_folder=folder)
    fill = time.perf_counter() - fill_start
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)

    assert not bag.import_errors, bag.import_errors
    assert len(bag.dags) == expected, f"{len(bag.dags)} DAGs, expected {expected}"
    if only is not None and expected == 1:
        assert set(bag.dags) == {only}, sorted(bag.dags)[:5]
    for dag in list(bag.dags.values())[:3]:
        assert len(dag.tasks) == TASKS_PER_DAG, (dag.dag_id, dag.task_ids)
    print(
        json.dumps(
            {
                "import_airflow_ms": (airflow_done - start) * 1000,
                "import_package_ms": (package_done - airflow_done) * 1000,
                "fill_ms": fill * 1000,
                "dags": len(bag.dags),
            }
        )
    )


# --------------------------------------------------------------------------- parent


@dataclass
class Sample:
    import_ms: float
    fill_ms: float
    wall_ms: float
    dags: int


@dataclass
class Case:
    """Repeated cold-process runs of one kind on one folder."""

    samples: list[Sample] = field(default_factory=list)

    def pick(self, attr: str, stat: str) -> float:
        values = [getattr(sample, attr) for sample in self.samples]
        return min(values) if stat == "min" else statistics.median(values)


def child_env(home: Path, folder: Path, only: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.pop("_AIRFLOW_PARSING_CONTEXT_DAG_ID", None)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(folder),
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="0",  # dag-factory at 1000 DAGs may need > 30 s
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",  # same for both; dag-factory logs per file
        DO_NOT_TRACK="1",  # no dag-factory telemetry
        SCARF_NO_ANALYTICS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    if only is not None:
        env["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = only
    return env


def run_child(
    kind: str,
    folder: Path,
    home: Path,
    expected: int,
    only: str | None = None,
    profile: str | None = None,
) -> Sample:
    command = [sys.executable, __file__, "--child", kind, str(folder), str(expected)]
    if only is not None:
        command += ["--only", only]
    if profile is not None:
        command += ["--profile-out", profile]
    start = time.perf_counter()
    done = subprocess.run(
        command, env=child_env(home, folder, only), capture_output=True, text=True, check=False
    )
    wall = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"benchmark child failed: {kind} {folder} (exit {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Sample(
        import_ms=result["import_airflow_ms"] + result["import_package_ms"],
        fill_ms=result["fill_ms"],
        wall_ms=wall,
        dags=result["dags"],
    )


def measure(
    kind: str,
    folder: Path,
    home: Path,
    expected: int,
    repeat: int,
    only: str | None = None,
) -> Case:
    case = Case()
    for _ in range(repeat):
        case.samples.append(run_child(kind, folder, home, expected, only))
    return case


def machine() -> str:
    from machine_info import describe  # bench/ is on sys.path when a bench script runs

    return describe("apache-airflow", "dag-factory")


def render(
    sizes: list[int],
    ours: dict[int, Case],
    theirs: dict[int, Case],
    workers: dict[str, Case],
    repeat: int,
    stat: str,
) -> str:
    label = "best" if stat == "min" else "median"
    lines = [
        f"Machine: {machine()}",
        f"Each cell: {label} of {repeat} cold processes.",
        "",
        "| routes | ours: DagBag fill | ours: ms/route | dag-factory: DagBag fill "
        "| dag-factory: ms/route | dag-factory / ours | ours: imports | dag-factory: imports "
        "| ours: process wall | dag-factory: process wall |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        a, b = ours[n], theirs[n]
        a_fill, b_fill = a.pick("fill_ms", stat), b.pick("fill_ms", stat)
        lines.append(
            f"| {n} | {a_fill:.0f} ms | {a_fill / n:.2f} | {b_fill:.0f} ms | {b_fill / n:.2f} "
            f"| {b_fill / a_fill:.1f}x | {a.pick('import_ms', stat):.0f} ms "
            f"| {b.pick('import_ms', stat):.0f} ms | {a.pick('wall_ms', stat):.0f} ms "
            f"| {b.pick('wall_ms', stat):.0f} ms |"
        )
    if workers:
        lines += [
            "",
            f"Worker (`_AIRFLOW_PARSING_CONTEXT_DAG_ID` set) with {max(sizes)} files present:",
            "",
            "| case | DagBag fill | DAGs built | imports | process wall |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, case in workers.items():
            lines.append(
                f"| {name} | {case.pick('fill_ms', stat):.1f} ms | {case.samples[0].dags} "
                f"| {case.pick('import_ms', stat):.0f} ms | {case.pick('wall_ms', stat):.0f} ms |"
            )
    return "\n".join(lines) + "\n"


def write_results(out: Path, table: str) -> None:
    """Replace the results section of ``out`` (between the markers), or append one."""
    block = f"{RESULTS_START}\n{table}{RESULTS_END}"
    text = out.read_text(encoding="utf-8") if out.exists() else ""
    if RESULTS_START in text and RESULTS_END in text:
        head, rest = text.split(RESULTS_START, 1)
        tail = rest.split(RESULTS_END, 1)[1]
        text = head + block + tail
    else:
        text = text + ("\n" if text else "") + "## Results\n\n" + block + "\n"
    out.write_text(text, encoding="utf-8")


def print_profile(path: str, limit: int) -> None:
    import pstats

    stats = pstats.Stats(path)
    stats.sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,100,1000", help="route counts (default 1,100,1000)")
    parser.add_argument("--repeat", type=int, default=3, help="cold processes per cell")
    parser.add_argument("--stat", choices=["median", "min"], default="median")
    parser.add_argument("--out", type=Path, help="rewrite the results section of this file")
    parser.add_argument("--no-worker", action="store_true", help="skip the worker cases")
    parser.add_argument(
        "--profile",
        metavar="KIND",
        choices=["ours", "dagfactory", "ours-worker"],
        help="instead: cProfile one DagBag fill of KIND at the largest size (ours-worker: one route)",
    )
    parser.add_argument("--child", nargs=3, metavar=("KIND", "FOLDER", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", dest="profile_out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, folder, expected = args.child
        child_main(kind, folder, int(expected), args.only, args.profile_out)
        return 0

    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    # Bytecode as an installed package has it: a module edited since its last import would
    # otherwise be compiled from source in the first cold process (~10 ms).
    compileall.compile_dir(REPO / "airflow_dataflow", quiet=1)
    work = Path(tempfile.mkdtemp(prefix="dataflow-bench-"))
    try:
        home = work / "airflow_home"
        home.mkdir()
        if args.profile:
            n = max(sizes)
            kind = "dagfactory" if args.profile == "dagfactory" else "ours"
            folder = work / f"{kind}_{n}"
            (write_routes if kind == "ours" else write_dagfactory)(folder, n)
            stats = str(work / "profile.out")
            if args.profile == "ours-worker":
                run_child(kind, folder, home, 1, only=route_id(0), profile=stats)
            else:
                run_child(kind, folder, home, n, profile=stats)
            print_profile(stats, 30)
            return 0

        ours: dict[int, Case] = {}
        theirs: dict[int, Case] = {}
        for n in sizes:
            write_routes(work / f"ours_{n}", n)
            write_dagfactory(work / f"dagfactory_{n}", n)
            ours[n] = measure("ours", work / f"ours_{n}", home, n, args.repeat)
            theirs[n] = measure("dagfactory", work / f"dagfactory_{n}", home, n, args.repeat)
            print(
                f"  {n} routes: ours {ours[n].pick('fill_ms', args.stat):.0f} ms, "
                f"dag-factory {theirs[n].pick('fill_ms', args.stat):.0f} ms",
                file=sys.stderr,
            )

        workers: dict[str, Case] = {}
        n = max(sizes)
        if not args.no_worker and n > 1:
            folder = work / f"ours_{n}"
            by_name = route_id(0 if renamed_index(n) else 1)
            workers["ours, DAG id = file name"] = measure(
                "ours", folder, home, 1, args.repeat, only=by_name
            )
            workers["ours, DAG id from a `route:` key"] = measure(
                "ours", folder, home, 1, args.repeat, only=renamed_id(renamed_index(n))
            )
            workers["dag-factory (no parsing-context support: builds all)"] = measure(
                "dagfactory", work / f"dagfactory_{n}", home, n, args.repeat, only=by_name
            )

        table = render(sizes, ours, theirs, workers, args.repeat, args.stat)
        print(table)
        if args.out:
            write_results(args.out, table)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
