"""The README's Python examples run, in order, as a reader pasting them into one notebook would: the docs cannot drift.

Every ```python block of README.md is read when the tests are collected and becomes one test, named by the README
line of its opening fence (``test_readme_block[README.md:77]``). The blocks share one namespace in README order (a
later section uses the ``state`` an earlier one made); a block after one that broke is skipped, naming it. They run
in this process, on the session's VGG16 (``cw.load_model("vgg16", weights="bsds500")`` returns it), in a temporary
working folder that also holds the scan and feature-visualisation cache (``$CNNVIZ_CACHE_DIR``).

What a block leaves to its reader is said in README.md, by an HTML comment right before its fence (blank lines
between are allowed; a comment is invisible on the rendered page):

- ``<!-- readme-test: skip (why) -->``: the block is not run; the reason is required, and pytest's summary shows it.
- ``<!-- readme-test: given NAME, NAME (what they stand for) -->``: the test supplies each NAME before the block runs,
  from `GIVEN` below: a Python name the reader brings (their data, another shard) is bound in the namespace; a file
  name (a placeholder photo) is written into the working folder. A NAME that `GIVEN` does not know is an error.

A failure names the block's README line, its first line, and the README line that raised.
"""

from __future__ import annotations

import contextlib
import re
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cnnviz_widgets as cw

README = Path(__file__).resolve().parents[1] / "README.md"

_FENCE = re.compile(r"^\s{0,3}(```+|~~~+)\s*([\w+-]*)")
_MARKER = re.compile(r"^\s*<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
_COMMENT_OF_OURS = re.compile(r"<!--\s*readme-test", re.IGNORECASE)
_SKIP = re.compile(r"^skip\s*\((.+)\)$")
_GIVEN = re.compile(r"^given\s+([^()]+?)\s*(\(.*\))?$")


@dataclass(frozen=True)
class Block:
    """One ```python block: where it is, its code, and what its marker says."""

    line: int  # the opening fence, 1-based
    source: str  # the lines between the fences
    skip: str | None = None  # why it is not run
    given: tuple[str, ...] = ()  # names and files the test supplies

    @property
    def where(self) -> str:
        return f"README.md:{self.line}"

    @property
    def first(self) -> str:
        return next((line.strip() for line in self.source.splitlines() if line.strip()), "")


def parse_readme(text: str) -> tuple[list[Block], list[str]]:
    """The python blocks of a README text, and what is wrong with its readme-test markers (README lines named)."""
    blocks: list[Block] = []
    problems: list[str] = []
    pending: list[tuple[int, str]] = []  # markers waiting for the next fence: (line, text)
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i]
        fence = _FENCE.match(line)
        if fence:
            close = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence.group(1))),
                         len(lines))
            language = fence.group(2).lower()
            if language in ("python", "py"):
                skip, given = None, ()
                for marker_line, marker in pending:
                    if (m := _SKIP.match(marker)) and m.group(1).strip():
                        skip = m.group(1).strip()
                    elif m := _GIVEN.match(marker):
                        given += tuple(name.strip() for name in m.group(1).split(",") if name.strip())
                    else:
                        problems.append(f"README.md:{marker_line}: unknown readme-test marker {marker!r}: "
                                        "write 'skip (why)' or 'given NAME, NAME (what they stand for)'")
                blocks.append(Block(number, "\n".join(lines[i + 1:close]) + "\n", skip, given))
            else:
                problems += [f"README.md:{at}: a readme-test marker before a ```{language} block, not a python one"
                             for at, _ in pending]
            pending = []
            i = close + 1
            continue
        marker = _MARKER.match(line)
        if marker:
            pending.append((number, marker.group(1)))
        elif _COMMENT_OF_OURS.search(line):
            problems.append(f"README.md:{number}: a readme-test marker must be a whole line: <!-- readme-test: … -->")
        elif line.strip() and pending:
            problems += [f"README.md:{at}: a readme-test marker not right before a python block" for at, _ in pending]
            pending = []
        i += 1
    problems += [f"README.md:{at}: a readme-test marker not right before a python block" for at, _ in pending]
    return blocks, problems


BLOCKS, MARKER_PROBLEMS = parse_readme(README.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------ what the reader brings


def _digits_setting(run: ReadmeRun) -> dict[str, Any]:
    """Notebook 05's setting, small: the bundled 8×8 digits and a CNN whose first conv layer is ``conv1``."""
    from cnnviz_widgets.network.backend import keras

    k = keras()
    k.utils.set_random_seed(0)
    digits = cw.load_digits()
    pixels = (digits.images[..., None] * (255 / 16)).astype("uint8")
    model = k.Sequential([
        k.Input((8, 8, 1), name="digit"), k.layers.Rescaling(1 / 255, name="scale"),
        k.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1"), k.layers.MaxPooling2D(name="pool1"),
        k.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2"), k.layers.Flatten(name="flat"),
        k.layers.Dense(10, activation="softmax", name="digit_class"),
    ], name="digits_cnn")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return dict(model=model, x=pixels[:320], y=digits.target[:320], x_val=pixels[320:400],
                y_val=digits.target[320:400], x_test=pixels[400:416])


def _other_shard(run: ReadmeRun) -> Any:
    """A scan of 4 other pictures (ids of their own) on the README's ``state``: what another machine returns."""
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(4)]
    return cw.top_examples(run.namespace["state"], pictures, ids=[f"other-{i}" for i in range(4)], k=9,
                           cache=False, progress=False)


def _photo(run: ReadmeRun, name: str) -> None:
    """A reader's photo: the astronaut at 128×128 (small, so the network runs fast), as a JPEG file."""
    from PIL import Image

    Image.fromarray(cw.sample_image("astronaut")).resize((128, 128)).save(run.workdir / name, quality=90)


GIVEN: dict[str, Callable[[ReadmeRun], Any]] = {
    **{name: (lambda run, name=name: run.once(_digits_setting)[name])
       for name in ("model", "x", "y", "x_val", "y_val", "x_test")},
    "other_shard": _other_shard,
    "my_photo.jpg": lambda run: _photo(run, "my_photo.jpg"),
}
"""What the README's ``given`` markers may name: a Python name's value, or (a name with a dot) a file written."""


# ------------------------------------------------------------------------------------------------- running


class ReadmeRun:
    """The one namespace the blocks share, run in README order, each block at most once."""

    def __init__(self, workdir: Path, vgg16: Any):
        self.workdir = workdir
        self.vgg16 = vgg16
        self.namespace: dict[str, Any] = {"__name__": "__readme__"}
        self.outcome: dict[int, str | None] = {}  # block line -> None (ran) or what broke
        self._made: dict[Callable, Any] = {}

    def once(self, make: Callable[[ReadmeRun], Any]) -> Any:
        if make not in self._made:
            self._made[make] = make(self)
        return self._made[make]

    @contextlib.contextmanager
    def _inside(self) -> Iterator[None]:
        """The working folder, its cache, and the session's VGG16 for the README's offline load."""
        real_load = cw.load_model

        def load_model(name: Any, *args: Any, **kwargs: Any) -> Any:
            if (name, args, kwargs) == ("vgg16", (), {"weights": "bsds500"}):
                return self.vgg16
            return real_load(name, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(self.workdir)
            patch.setenv("CNNVIZ_CACHE_DIR", str(self.workdir / "cache"))
            patch.setattr(cw, "load_model", load_model)
            yield

    def execute(self, block: Block) -> str | None:
        """Run `block` in the namespace; None, or a message naming the README lines of the block and the error."""
        unknown = [name for name in block.given if name not in GIVEN]
        if unknown:
            return (f"{block.where}: the readme-test marker gives {unknown}, which tests/test_readme.py does not "
                    f"know: known are {sorted(GIVEN)}")
        # README line numbers in tracebacks: the code starts on the line after the fence
        code = compile("\n" * block.line + block.source, str(README), "exec")
        try:
            with self._inside():
                for name in block.given:
                    value = GIVEN[name](self)
                    if name.isidentifier():
                        self.namespace[name] = value
                exec(code, self.namespace)
        except Exception as err:
            raised = [frame.lineno for frame in traceback.extract_tb(err.__traceback__)
                      if frame.filename == str(README)]
            at = f"README.md:{raised[-1]}" if raised else "a given (before its first line)"
            trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
            return (f"{block.where}: the README block `{block.first}` broke at {at}: {type(err).__name__}: {err}\n"
                    f"(mark it `<!-- readme-test: skip (why) -->` or `given NAME` if it cannot run here)\n\n"
                    + trace[-4000:])
        return None

    def run_up_to(self, block: Block) -> None:
        """Run every earlier block not yet run, then this one; skip when an earlier one broke, fail when it does."""
        for earlier in BLOCKS:
            if earlier.line == block.line:
                break
            if earlier.skip is None and earlier.line not in self.outcome:
                self.outcome[earlier.line] = self.execute(earlier)
            if self.outcome.get(earlier.line) is not None:
                pytest.skip(f"{block.where} not run: {earlier.where} before it broke (its namespace is incomplete)")
        if block.line not in self.outcome:
            self.outcome[block.line] = self.execute(block)
        if self.outcome[block.line] is not None:
            pytest.fail(self.outcome[block.line], pytrace=False)

    def close(self) -> None:
        """Close the widgets the blocks made (their observers and threads go with them)."""
        import ipywidgets

        for value in list(self.namespace.values()):
            if isinstance(value, ipywidgets.Widget):
                value.close()


@pytest.fixture(scope="module")
def readme_run(vgg16_bsds, tmp_path_factory) -> Iterator[ReadmeRun]:
    workdir = tmp_path_factory.mktemp("readme")
    run = ReadmeRun(workdir, vgg16_bsds)
    yield run
    run.close()


# --------------------------------------------------------------------------------------------------- tests


def test_readme_has_python_blocks_and_well_formed_markers():
    assert BLOCKS, f"no ```python block found in {README}"
    assert not MARKER_PROBLEMS, "\n".join(MARKER_PROBLEMS)


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_readme_block(block: Block, readme_run: ReadmeRun):
    if block.skip is not None:
        pytest.skip(f"{block.where} `{block.first}`: {block.skip}")
    readme_run.run_up_to(block)


def test_markers_are_read():
    """The parser on a made-up README: skip, given, and the mistakes it names by line."""
    text = "\n".join([
        "# t", "<!-- readme-test: skip (needs the internet) -->", "```python", "a = 1", "```",
        "<!-- readme-test: given x, my_photo.jpg (the reader's data) -->", "", "```python", "b = x", "```",
        "```python", "c = 2", "```",
        "<!-- readme-test: skip () -->", "```python", "d = 3", "```",
        "<!-- readme-test: given y -->", "text between", "```bash", "ls", "```",
        "<!-- readme-test: given z -->", "```bash", "ls", "```",
    ])
    blocks, problems = parse_readme(text)
    assert [(b.line, b.skip, b.given, b.first) for b in blocks] == [
        (3, "needs the internet", (), "a = 1"), (8, None, ("x", "my_photo.jpg"), "b = x"), (11, None, (), "c = 2"),
        (15, None, (), "d = 3")]
    assert problems == [
        "README.md:14: unknown readme-test marker 'skip ()': write 'skip (why)' or 'given NAME, NAME (what they "
        "stand for)'",
        "README.md:18: a readme-test marker not right before a python block",
        "README.md:23: a readme-test marker before a ```bash block, not a python one",
    ]


def test_a_broken_block_names_its_readme_lines(tmp_path):
    """The failure message names the block's fence line and the README line that raised."""
    block = Block(40, "x = 1\ny = undefined_name\n")
    message = ReadmeRun(tmp_path, vgg16=None).execute(block)
    assert message is not None
    assert message.startswith("README.md:40: the README block `x = 1` broke at README.md:42: NameError"), message
