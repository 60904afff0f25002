"""MkDocs hooks of the rlalign site.

- The notebooks of ``examples/`` become the Tutorials pages (``examples/NN_name.py``, the same
  path as in the repository), rendered by mkdocs-jupyter; links between notebooks
  (``02_self_driving_car.py``, which is what works in Jupyter) are rewritten to the pages'
  URLs, and any other relative link inside a notebook fails the build, as MkDocs does for
  Markdown pages.
- ``reference/cli.md`` is generated from ``rlalign.cli.build_parser()``: the ``--help`` of
  every command and subcommand, and the config keys of every command that reads a config
  (from the pydantic classes themselves), so the reference cannot drift from the CLI.
"""

from __future__ import annotations

import argparse
import html
import importlib
import logging
import os
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.rlalign")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NOTEBOOK = re.compile(r"\d\d_\w+\.py")

# Commands that read a typed config, and the classes that define their keys.
CONFIGS: dict[str, list[str]] = {
    "demo": [
        "rlalign.demo:DemoConfig",
        "rlalign.demo_drive:DriveDemoConfig",
        "rlalign.demo_tool:ToolDemoConfig",
    ],
    "world export": ["rlalign.data.world:WorldConfig"],
    "pretrain": ["rlalign.train.pretrain:PretrainConfig"],
    "sft": ["rlalign.train.sft:SFTConfig"],
    "reward": ["rlalign.train.reward_model:RewardConfig"],
    "rl": ["rlalign.train.rl_config:RLConfig"],
    "control train": [
        "rlalign.control.train_config:PPOConfig",
        "rlalign.control.train_config:ReinforceConfig",
    ],
}


def notebooks() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.py") if NOTEBOOK.fullmatch(p.name))


# Before mkdocs-jupyter's on_files, which turns the notebook files into pages.
@event_priority(100)
def on_files(files: Files, config) -> Files:
    for path in notebooks():
        # A real file under a real src_dir: mkdocs-jupyter's page wrapper needs one.
        files.append(
            File(
                f"examples/{path.name}",
                src_dir=str(ROOT),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    files.append(File.generated(config, "reference/cli.md", content=cli_reference()))
    return files


_HREF = re.compile(r'(href|src)="([^"#?]*)([^"]*)"')


def on_page_content(content: str, page, config, files: Files) -> str:
    """Point links between notebooks at their pages; fail on any other broken relative link."""
    if not (page.file.src_uri.startswith("examples/") and page.file.src_uri.endswith(".py")):
        return content
    here = posixpath.dirname(page.file.src_uri)

    def fix(match: re.Match) -> str:
        attr, target, rest = match.groups()
        if not target or re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            return match.group(0)  # an anchor, or an absolute / external URL
        linked = files.get_file_from_path(posixpath.normpath(posixpath.join(here, target)))
        if linked is None:
            log.warning(
                "%s: link to %r, which is not a file of the site", page.file.src_uri, target
            )
            return match.group(0)
        return f'{attr}="{linked.url_relative_to(page.file)}{rest}"'

    return _HREF.sub(fix, content)


# ----------------------------------------------------------------------------- CLI reference


def iter_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """``(path, parser, help)`` for every subcommand below ``parser``, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, helps.get(name, "")
                yield from iter_commands(sub, (*path, name))


def _help_text(parser: argparse.ArgumentParser) -> str:
    # argparse wraps to the terminal's width: fix it, so the page is the same on every machine.
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"
    try:
        # argparse's own help, without the list of keys `--help` appends: the page's tables
        # below hold the keys, with the same types, defaults and descriptions
        return argparse.ArgumentParser.format_help(parser)
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def config_table(spec: str, parser: argparse.ArgumentParser) -> str:
    from rlalign.commands.keys_help import CONTROL_GROUPS, GROUPS, group_of, key_entries

    module, name = spec.split(":")
    cls = getattr(importlib.import_module(module), name)
    groups = CONTROL_GROUPS if module.startswith("rlalign.control") else GROUPS
    entries = key_entries(cls)
    grouped = all(group_of(key, groups) != "other" for key, *_ in entries)
    rows = [
        # a `|` inside a table cell would split it, even in code
        f"| `{key}` | `{kind.replace('|', ' or ')}` | {default.removeprefix('default ')} |"
        + (f" {group_of(key, groups)} |" if grouped else "")
        + f" {html.escape(text)} |"
        for key, kind, default, text in entries
    ]
    takes_file = any("--config" in a.option_strings for a in parser._actions)
    where = "in a YAML file given with `--config`, or " if takes_file else ""
    head = "| key | type | default |" + (" group |" if grouped else "") + " meaning |"
    return "\n".join(
        [
            f"Config keys (`{module}.{name}`): {where}as `key=value` on the command line.",
            "",
            head,
            "|" + " --- |" * head.count(" |"),
            *rows,
        ]
    )


def cli_reference() -> str:
    from rlalign.cli import build_parser

    parser = build_parser()
    parts = [
        "# CLI reference",
        "",
        "Generated at build time from `rlalign.cli.build_parser()`, the parser the `rlalign` "
        "command itself uses: each section below is that command's `--help`, and the tables "
        "list the keys of the typed config it reads. `python -m rlalign` is the same entry "
        "point.",
        "",
        "## rlalign",
        "",
        "```text",
        _help_text(parser).rstrip(),
        "```",
    ]
    for path, sub, help_line in iter_commands(parser):
        name = " ".join(path)
        parts += ["", f"{'#' * min(len(path) + 1, 4)} rlalign {name}", ""]
        if help_line:
            parts += [html.escape(help_line[0].upper() + help_line[1:]) + ".", ""]
        parts += ["```text", _help_text(sub).rstrip(), "```"]
        for spec in CONFIGS.get(name, []):
            parts += ["", config_table(spec, sub)]
    return "\n".join(parts) + "\n"
