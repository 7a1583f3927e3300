"""Run the examples of Markdown pages: ``python tests/docs_examples.py [--workdir DIR] PAGE.md ...``.

Every fenced block whose language is ``bash``, ``sh``, ``shell`` or ``python`` is an example and
runs, in the order of the page, in one working directory per page (DIR/<page>, DIR by default a new
temporary one):
shell blocks with ``bash -e``, Python blocks with ``exec`` in one namespace shared by the page's
Python blocks. Blocks without a language, or ``text``, are synopses or output and do not run.

HTML comments right above a block (invisible on the rendered page) say how it runs at test size:

    <!-- docs-test: skip "why it cannot run here (GPU, hours, a network)" -->
    <!-- docs-test: replace "OLD" "NEW" -->       size substitution, applied to the block's text;
                                                    OLD must occur in it
    <!-- docs-test: expect "TEXT" -->             TEXT must appear in what the block prints
    <!-- docs-test: requires "module" -->         skipped (and said so) when the module is missing
    <!-- docs-test: setup "shell command" -->      run first, unseen (e.g. make the file an example reads)

Two rules hold for every page: ``bash setup.sh && `` is dropped (the test runs in the environment
``setup.sh`` made) and ``.venv/bin/`` is dropped (commands come from this interpreter's ``bin``).
Exit status 0 when every example ran and printed what it claims; 1 otherwise, with the block's
page and line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

RUNNABLE = {"bash": "shell", "sh": "shell", "shell": "shell", "python": "python"}
GLOBAL_REPLACEMENTS = (("bash setup.sh && ", ""), (".venv/bin/", ""))
_DIRECTIVE = re.compile(r"^<!--\s*docs-test:\s*(\w+)\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    page: str
    line: int
    language: str
    text: str
    skip: str | None = None
    requires: list[str] = field(default_factory=list)
    replacements: list[tuple[str, str]] = field(default_factory=list)
    expects: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str | None:
        return RUNNABLE.get(self.language)

    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def sized(self) -> str:
        """The block's text with its size substitutions and the global rules applied."""
        text = self.text
        for old, new in self.replacements:
            if old not in text:
                raise ValueError(f"{self.where()}: replace {old!r}: not in the block")
            text = text.replace(old, new)
        for old, new in GLOBAL_REPLACEMENTS:
            text = text.replace(old, new)
        return text


def parse(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page with the directives above each."""
    blocks, pending = [], []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _DIRECTIVE.match(line.strip())
        if match:
            pending.append((match.group(1), shlex.split(match.group(2))))
        elif line.startswith("```"):
            language = line[3:].strip().split(" ")[0]
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            block = Block(path.name, start, language, "\n".join(body) + "\n")
            for name, args in pending:
                if name == "skip":
                    block.skip = " ".join(args)
                elif name == "requires":
                    block.requires += args
                elif name == "replace" and len(args) == 2:
                    block.replacements.append((args[0], args[1]))
                elif name == "expect" and len(args) == 1:
                    block.expects.append(args[0])
                elif name == "setup" and len(args) == 1:
                    block.setup.append(args[0])
                else:
                    raise ValueError(f"{path}:{start}: bad docs-test directive {name} {args}")
            if pending and block.kind is None:
                raise ValueError(f"{path}:{start}: docs-test directives on a block that does not run")
            blocks.append(block)
            pending = []
        elif line.strip() and pending:
            raise ValueError(f"{path}:{i + 1}: docs-test directives not followed by a fenced block")
        i += 1
    return blocks


def run_shell(text: str, env: dict, cwd: Path) -> tuple[int, str]:
    done = subprocess.run(["bash", "-e", "-c", text], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    return done.returncode, done.stdout


def run_python(text: str, namespace: dict, name: str) -> tuple[int, str]:
    captured = io.StringIO()
    status = 0
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        try:
            exec(compile(text, name, "exec"), namespace)
        except BaseException:   # noqa: BLE001 - any failure of the example is reported with its traceback
            traceback.print_exc()
            status = 1
    return status, captured.getvalue()


def run_page(page: Path, workdir: Path, env: dict) -> int:
    """Run one page's examples in ``workdir``; the number of blocks that failed."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    namespace: dict = {"__name__": "__docs_example__"}
    failures = 0
    for block in parse(page):
        if block.kind is None:
            continue
        missing = [m for m in block.requires if importlib.util.find_spec(m) is None]
        if block.skip or missing:
            print(f"SKIP {block.where()}: {block.skip or 'needs ' + ', '.join(missing)}", flush=True)
            continue
        start = time.perf_counter()
        text = block.sized()
        for command in block.setup:
            status, output = run_shell(command, env, workdir)
            if status != 0:
                print(f"FAIL {block.where()}: setup {command!r} (exit status {status}):\n{output[-6000:]}", flush=True)
                failures += 1
                break
        else:
            status = 0
        if status != 0:
            continue
        if block.kind == "shell":
            status, output = run_shell(text, env, workdir)
        else:
            status, output = run_python(text, namespace, block.where())
        absent = [claim for claim in block.expects if claim not in output]
        ok = status == 0 and not absent
        print(f"{'ok  ' if ok else 'FAIL'} {block.where()} ({block.kind}, {time.perf_counter() - start:.1f} s)",
              flush=True)
        if not ok:
            failures += 1
            print(f"--- ran:\n{text}--- printed (exit status {status}):\n{output[-6000:]}", flush=True)
            for claim in absent:
                print(f"--- the page says it prints {claim!r}; it did not", flush=True)
    return failures


def main(argv: list[str]) -> int:
    """``docs_examples.py [--workdir DIR] PAGE.md ...``: each page runs in DIR/<page name>."""
    if argv[:1] == ["--workdir"]:
        root, pages = Path(argv[1]), argv[2:]
    else:
        root, pages = Path(tempfile.mkdtemp(prefix="jax-td3-docs-")), argv
    pages = [Path(page).resolve() for page in pages]
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
    sys.path.insert(0, str(repo))
    # The Python examples share the compiled programs of the shell ones, as `jax-td3 train` keeps them
    # (JAX_TD3_COMPILE_CACHE: the test run's own cache): the same results, compiled once.
    from jax_td3.compile_cache import enable_compile_cache

    enable_compile_cache()
    failures = sum(run_page(page, root.resolve() / page.stem, env) for page in pages)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
