"""Writes docs/configuration.md, the reference of every setting, from the config classes in pipelines/config.py.

    python -m pipelines.configdoc            # (re)write docs/configuration.md (`make docs`)
    python -m pipelines.configdoc --check    # exit 1 when the committed file is out of date

The classes are the single source: a key's name, type and default come from its dataclass field, its choices from
``config._CHOICES``, its variable from ``config.env_name`` and ``config.ENV_ALIASES``, and its meaning from the
``#`` comment lines right above the field (and a comment at the end of its line). A section's introduction is the
comment above its field in ``Config``. A key or section without a comment is an error, so none goes undocumented.
tests/unit/test_configdoc.py fails while the committed file differs from what this module writes.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import io
import re
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any

from pipelines import config as C

OUT = C.ROOT / "docs" / "configuration.md"


@dataclasses.dataclass(frozen=True)
class Key:
    section: str
    name: str
    type: str
    default: str
    env: tuple[str, ...]
    meaning: str


def _comments(source: str) -> tuple[dict[int, str], set[int]]:
    """Comment text by line number, and the lines that hold nothing but a comment."""
    text: dict[int, str] = {}
    alone: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            line = tok.start[0]
            text[line] = tok.string.lstrip("#").strip()
            if not tok.line[: tok.start[1]].strip():
                alone.add(line)
    return text, alone


def field_comments(source: str | None = None) -> dict[str, dict[str, str]]:
    """For each class in the config module, each annotated field's comment: the comment-only lines right above
    it, then any comment on the field's own lines."""
    source = source if source is not None else Path(C.__file__).read_text()
    text, alone = _comments(source)
    out: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = out.setdefault(node.name, {})
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            above = []
            line = item.lineno - 1
            while line in alone:
                above.append(text[line])
                line -= 1
            trailing = [text[n] for n in range(item.lineno, (item.end_lineno or item.lineno) + 1)
                        if n in text and n not in alone]
            fields[item.target.id] = " ".join([*reversed(above), *trailing]).strip()
    return out


def _type_name(typ: Any, choices: set[str] | None) -> str:
    if choices:
        return "one of " + ", ".join(f"`{c}`" for c in sorted(choices))
    if typing.get_origin(typ) is tuple:
        return "list of strings"
    return {bool: "bool", int: "int", float: "float", str: "string"}.get(typ, str(typ))


def _default(value: Any) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`" if value else "(empty)"
    if value == "":
        return "(empty)"
    return f"`{value}`"


def keys() -> list[Key]:
    """Every setting, in the order of the classes."""
    comments = field_comments()
    defaults = C.Config()
    aliases: dict[tuple[str, str], list[str]] = {}
    for name, target in C.ENV_ALIASES.items():
        aliases.setdefault(target, []).append(name)
    out = []
    for section, sec_type in typing.get_type_hints(C.Config).items():
        hints = typing.get_type_hints(sec_type)
        for f in dataclasses.fields(sec_type):
            meaning = comments.get(sec_type.__name__, {}).get(f.name, "")
            if not meaning:
                raise ValueError(f"{section}.{f.name} has no comment in pipelines/config.py ({sec_type.__name__}): "
                                 f"write what it means in a `#` comment right above the field")
            out.append(Key(section, f.name, _type_name(hints[f.name], C._CHOICES.get((section, f.name))),
                           _default(getattr(getattr(defaults, section), f.name)),
                           (C.env_name(section, f.name), *aliases.get((section, f.name), ())), meaning))
    return out


def sections() -> dict[str, str]:
    """Section name -> its introduction (the comment above its field in Config)."""
    comments = field_comments().get("Config", {})
    out = {}
    for section in typing.get_type_hints(C.Config):
        if not comments.get(section):
            raise ValueError(f"section {section} has no comment above its field in pipelines/config.py's Config")
        out[section] = comments[section]
    return out


def _md(text: str, known: set[str], section: str = "") -> str:
    """Markdown for a comment: settings (`section.key`, or a key of `section` with an underscore in its name) and
    STREAMSCORE_ variables in code spans, and nothing that a table or HTML could eat."""
    siblings = {k.split(".", 1)[1] for k in known if k.startswith(f"{section}.") and "_" in k.split(".", 1)[1]}
    parts = re.split(r"(`[^`]*`)", text)
    for i, part in enumerate(parts):
        if part.startswith("`"):
            continue

        def code(m: re.Match[str]) -> str:
            word = m.group(0)
            return f"`{word}`" if word in known or word in siblings or word.startswith("STREAMSCORE_") else word

        part = re.sub(r"(?<![\w.])(?:STREAMSCORE_[A-Z0-9_]+|[a-z]+\.[a-z0-9_]+|[a-z0-9]+(?:_[a-z0-9]+)+)(?![\w/])",
                      code, part)
        parts[i] = part.replace("<", "&lt;").replace("|", "\\|").replace("*", "\\*")
    return "".join(parts)


HEADER = """\
# Configuration reference

<!-- Generated by `python -m pipelines.configdoc` (`make docs`) from pipelines/config.py: do not edit. -->

This file is generated by `python -m pipelines.configdoc` (`make docs`) from the config classes in
[pipelines/config.py](../pipelines/config.py): each key's type and default from its dataclass field, its meaning from
the comment above the field. Do not edit it by hand; change the comment and run `make docs`.
`tests/unit/test_configdoc.py` fails while this file differs from what the generator writes.

## How settings are read

`pipelines.config.load_config()` builds one validated, frozen `Config` from three layers; a later layer wins:

1. the defaults below;
2. a YAML file: `$STREAMSCORE_CONFIG`, else `config/streamscore.yaml` when it exists, of sections and keys;
3. environment variables `STREAMSCORE_<SECTION>__<KEY>`: the section and the key in capitals, two underscores
   between them. The conventional names below win over their `STREAMSCORE_` twins when set and not empty:
{aliases}

For example, the file

```yaml
kafka:
  bootstrap: broker-1:9092,broker-2:9092
fraud:
  review_threshold: 0.4
dashboard:
  allowed_origins: [https://dash.example.com]
```

and the variable `STREAMSCORE_FRAUD__REVIEW_THRESHOLD=0.3` give `fraud.review_threshold` 0.3.

Values from a file or a variable are converted to the key's type: a bool reads `true`/`false`, `1`/`0`,
`yes`/`no` or `on`/`off`; a list of strings is a YAML list or a comma-separated string; an int does not take a
fraction. A relative path is relative to the repository root.

Mistakes are errors, never a silent default. An unknown section or key in the file is an error that names the file
and the key; a `STREAMSCORE_` variable that is not `STREAMSCORE_CONFIG` and does not name a known section and key
is an error that names the variable (so is one without the `__`, such as `STREAMSCORE_KAFKA_PORT`). So are a value
of the wrong type, a value outside a key's choices, and the ranges `load_config` checks (ports, thresholds,
sizes).

Why this is a small dataclass loader and not `pydantic-settings`:
[notes/config-choice.md](notes/config-choice.md).

## Sections

{toc}
"""


def render() -> str:
    ks = keys()
    intro = sections()
    known = {f"{k.section}.{k.name}" for k in ks}
    aliases = "\n".join(f"   - `{a}`: `{s}.{k}`" for a, (s, k) in C.ENV_ALIASES.items())
    toc = "\n".join(f"- [{s}](#{s}): {_md(intro[s], known)}" for s in intro)
    out = [HEADER.format(aliases=aliases, toc=toc)]
    for section in intro:
        out.append(f"\n## {section}\n\n{_md(intro[section], known)}\n\n"
                   "| key | type | default | environment variable | meaning |\n|---|---|---|---|---|\n")
        for k in (k for k in ks if k.section == section):
            env = " or ".join(f"`{e}`" for e in k.env)
            out.append(f"| `{k.section}.{k.name}` | {k.type} | {k.default} | {env} | "
                       f"{_md(k.meaning, known, section)} |\n")
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            diff = difflib.unified_diff(current.splitlines(), text.splitlines(), str(args.out), "generated",
                                        lineterm="", n=0)
            print("\n".join(list(diff)[:40]), file=sys.stderr)
            print(f"{args.out} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(keys())} keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
