"""genrec's benchmarks: each prints its table(s) and writes them, with its raw results, as JSON.

    python -m benchmarks                  # every benchmark, one line each
    python -m benchmarks NAME --help      # its flags and what it measures
    python -m benchmarks NAME [ARGS...]   # run it: tables on stdout, JSON to .bench/NAME.json (or --json PATH)

A benchmark is one module `benchmarks/NAME.py` (a name without a leading `_`), found by the entry point without
any list to edit. Its shape:

- a docstring whose first line is a one-line summary (the listing prints it), then the commands that produced
  the figures in the docs and what exactly is measured;
- `main(argv: list[str] | None = None)`, which parses `argv` (None: the command line) with
  `_common.parser(__name__, __doc__)` (adds `--json` and `--threads`), prints through
  `report = _common.Report(__name__, args)` (`report.table(columns, rows)`, `report.line(text)`, raw figures in
  `report.results`) and ends with `report.save()`;
- times with `_common.timed` / `_common.alternate` (warm-up, then repeats; candidates alternate within a round),
  runs what needs a clean process with `_common.fresh_process`, and reads the machine with `_common.cpu_facts`
  and `_common.matmul_peak`;
- never edits `sys.path`: it runs from the repository root (or with the repository on `PYTHONPATH`), and a test
  checks every module for it.

docs/benchmarks.md shows a complete example.

Modules whose name starts with `_` hold what benchmarks share; they are not benchmarks.
"""
