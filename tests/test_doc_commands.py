"""Every command line the README and docs/USAGE.md show can be typed as shown: each `nnssl_*` line parses with the
parser of its own console script (placeholders such as `<run folder>` or `D` substituted), and each `nnUNetv2_*`
line names a console script nnU-Net installs. Command lines are taken from fenced code blocks and from inline code
spans that hold a whole command with arguments (a bare name is a name; synopses with `[optional]` parts are the
parser's help, not command lines)."""
from __future__ import annotations

import importlib
import re
import shlex
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "USAGE.md"]

# a command starts at the line's start, after `$(`, `srun`, `&&`, `||`, `;` or `|`, and ends before `#`, `)`, `"`,
# a shell operator or the end of the line
COMMAND = re.compile(r"(?:^|\$\(|\bsrun\s|&&|\|\||;)\s*((?!nnssl_plugin\b)(?:nnssl|nnUNetv2)_\w+(?=[\s)\"]|$)"
                     r"(?:[^#;&|)\"`]*))")
PLACEHOLDERS = [  # what a reader would type for each placeholder the docs use
    (re.compile(r"<[^>]*(?:id|ds|dataset|labelled|target|unlabelled)[^>]*>", re.I), "991"),
    (re.compile(r"<method>"), "hier"),
    (re.compile(r"<[^>]*>"), "x"),
    (re.compile(r"(?<=\s)\.\.\.(?=\s|$)"), "x"),
]
UPPER_INT = re.compile(r"(?<=\s)(?:D|N|K|M|E|B|F)(?=\s|$)")


def _code_texts(text: str) -> list[str]:
    """The lines of every fenced block (continuations joined) and every inline code span."""
    texts = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        texts += block.replace("\\\n", " ").splitlines()
    outside = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
    texts += [span for span in re.findall(r"`([^`\n]+)`", outside)  # a bare name is a name, not a command line
              if " " in span.strip() and not re.search(r"[\[{…]", span)]
    return texts


def doc_commands() -> list[tuple[str, str]]:
    """(document name, command line) for every nnssl_*/nnUNetv2_* command shown."""
    found = []
    for doc in DOCS:
        for text in _code_texts(doc.read_text()):
            if re.search(r"\s\[-", text):  # a synopsis
                continue
            for command in COMMAND.findall(text):
                command = command.strip().rstrip(",.")
                if command:
                    found.append((doc.name, command))
    return found


def _substituted(command: str) -> list[str]:
    for pattern, value in PLACEHOLDERS:
        command = pattern.sub(value, command)
    command = UPPER_INT.sub("2", command)
    return shlex.split(command)


def _parser_of(script: str):
    """The argparse parser behind an installed nnssl_* console script."""
    (entry,) = [e for e in entry_points(group="console_scripts") if e.name == script]
    module = importlib.import_module(entry.module)
    if hasattr(module, "build_parser"):
        return module.build_parser()
    return module._parser(script, "", "", 0)  # convert.py: one parser builder for both converters


def test_the_docs_show_the_journey():
    scripts = {command.split()[0] for _, command in doc_commands()}
    assert {"nnssl_prepare", "nnssl_pretrain", "nnssl_export", "nnssl_env", "nnssl_probe", "nnUNetv2_train",
            "nnUNetv2_predict", "nnUNetv2_plan_and_preprocess"} <= scripts


@pytest.mark.parametrize("doc, command", doc_commands())
def test_every_command_line_shown_can_be_run_as_shown(doc, command):
    argv = _substituted(command)
    installed = {e.name for e in entry_points(group="console_scripts")}
    assert argv[0] in installed, f"{doc}: {argv[0]} is not an installed console script"
    if argv[0].startswith("nnssl_"):
        parser = _parser_of(argv[0])
        try:
            parser.parse_args(argv[1:])
        except SystemExit as e:
            pytest.fail(f"{doc}: `{command}` does not parse with {argv[0]}'s parser (exit {e.code})")
