"""Mutation testing without a pytest start per mutant: run the selected test functions
in-process against each mutant that mutmut generated (its trampolines read MUTANT_UNDER_TEST at
call time), after recording which mutated functions each test reaches. Run it from a mutmut
copy's mutants/ folder (tests/MUTATION.md, session 6, has the commands):

    python ../scripts/mutation_loop.py NAMES_FILE MODULE[:k1|k2][,MODULE...] [EXCLUDE,SUBSTRINGS]

A mutant is killed when a test raises (or runs past 120 s); survived when every test passes."""

import importlib
import inspect
import itertools
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())
os.environ["MUTANT_UNDER_TEST"] = ""
import pytest  # noqa: E402
from _pytest.fixtures import FixtureFunctionDefinition  # noqa: E402

names_file, modules = sys.argv[1], sys.argv[2].split(",")
exclude = [e for e in (sys.argv[3].split(",") if len(sys.argv) > 3 else []) if e]


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


signal.signal(signal.SIGALRM, _alarm)


class Factory:
    def mktemp(self, name):
        return Path(tempfile.mkdtemp(prefix=name))


def cases():
    out = []
    for spec in modules:
        module_name, _, include = spec.partition(":")
        include = [i for i in include.split("|") if i]
        module = importlib.import_module(module_name)
        fixtures = {
            k: v for k, v in vars(module).items() if isinstance(v, FixtureFunctionDefinition)
        }
        for name, func in list(vars(module).items()):
            if not name.startswith("test_") or not callable(func):
                continue
            if any(e in name for e in exclude) or (include and not any(i in name for i in include)):
                continue
            marks = [m for m in getattr(func, "pytestmark", []) if m.name == "parametrize"]
            if any(m.name in ("skip", "slow") for m in getattr(func, "pytestmark", [])):
                continue
            grids = []
            for m in marks:
                argnames = m.args[0]
                argnames = (
                    [a.strip() for a in argnames.split(",")]
                    if isinstance(argnames, str)
                    else list(argnames)
                )
                values = []
                for v in m.args[1]:
                    v = (
                        v.values
                        if hasattr(v, "values") and not isinstance(v, (tuple, list, dict))
                        else v
                    )
                    row = v if len(argnames) > 1 else (v,)
                    values.append(dict(zip(argnames, row, strict=True)))
                grids.append(values)
            for combo in itertools.product(*grids) if grids else [()]:
                params = {}
                for part in combo:
                    params.update(part)
                out.append(
                    (
                        f"{module_name}::{name}{list(params.values()) if params else ''}",
                        module,
                        fixtures,
                        func,
                        params,
                    )
                )
    return out


module_fixture_cache = {}


def call(case):
    label, module, fixtures, func, params = case
    kwargs = dict(params)
    cleanup = []
    for arg in inspect.signature(func).parameters:
        if arg in kwargs:
            continue
        if arg == "tmp_path":
            d = Path(tempfile.mkdtemp(prefix="loop"))
            cleanup.append(lambda d=d: shutil.rmtree(d, ignore_errors=True))
            kwargs[arg] = d
        elif arg == "monkeypatch":
            mp = pytest.MonkeyPatch()
            cleanup.append(mp.undo)
            kwargs[arg] = mp
        elif arg in fixtures:
            key = (module.__name__, arg)
            if key not in module_fixture_cache:
                fn = fixtures[arg]._get_wrapped_function()
                fargs = {a: Factory() for a in inspect.signature(fn).parameters}
                module_fixture_cache[key] = fn(**fargs)
            kwargs[arg] = module_fixture_cache[key]
        else:
            raise RuntimeError(f"{label}: unknown fixture {arg}")
    try:
        func(**kwargs)
    finally:
        for c in cleanup:
            c()


import mutmut.mutation.trampoline as trampoline  # noqa: E402

hits: set = set()
trampoline.record_trampoline_hit = lambda name, caller=None: hits.add(name)
all_cases = cases()
covers, seconds = {}, {}
start = time.time()
os.environ["MUTANT_UNDER_TEST"] = "stats"  # the original code, recording what each test reaches
for case in all_cases:  # every test passes on the original code
    hits.clear()
    t0 = time.time()
    call(case)
    seconds[case[0]], covers[case[0]] = time.time() - t0, set(hits)
print(
    f"# {len(all_cases)} test cases pass on the original code in {time.time() - start:.1f} s",
    flush=True,
)
last_killer = None
for mutant in Path(names_file).read_text().split():
    os.environ["MUTANT_UNDER_TEST"] = mutant
    function = mutant.partition("__mutmut_")[0]
    chosen = sorted(
        (c for c in all_cases if function in covers[c[0]]),
        key=lambda c: (c[0] != last_killer, seconds[c[0]]),
    )
    status, by = ("survived" if chosen else "no tests"), ""
    t0 = time.time()
    for case in chosen:
        signal.alarm(60)
        try:
            call(case)
        except Timeout:
            status, by = "timeout", case[0]
        except BaseException as error:  # noqa: BLE001
            if isinstance(error, KeyboardInterrupt):
                raise
            status, by = "killed", case[0]
        finally:
            signal.alarm(0)
        if status not in ("survived", "no tests"):
            last_killer = case[0]
            break
    print(mutant, status, by, f"{time.time() - t0:.2f}s", flush=True)
os.environ["MUTANT_UNDER_TEST"] = ""
