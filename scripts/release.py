"""What a release is made of, read from the repository: the version, the pins, the variants, the image tags
and the release notes. .github/workflows/release.yml runs it before anything is installed (standard library
only), and the tests run the same code, so the pipeline cannot drift from the files it reads.

    python3 scripts/release.py check --tag v1.2.3   the tag is the package's version and CHANGELOG.md has its
                                                    entry; prints the version
    python3 scripts/release.py pins                 the build arguments: docker/pins.env's KEY=VALUE lines
    python3 scripts/release.py variants             the release variants (variants/<name>/models.yaml)
    python3 scripts/release.py tags --tag v1.2.3 --variant sd15 --image ghcr.io/owner/comfy-worker [--image …]
    python3 scripts/release.py notes --tag v1.2.3 --image ghcr.io/owner/comfy-worker [--image …]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Semantic versions, pre-releases (1.2.0-rc.1) included; build metadata is not used for images.
_VERSION = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?$")
_PIN_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")
BASE = "base"


class ReleaseError(Exception):
    """The repository is not ready for this release; the message says what to fix."""


def package_version(root: Path = ROOT) -> str:
    """`__version__` of the worker package, the one place the version is written."""
    text = (root / "src" / "comfy_worker" / "__init__.py").read_text()
    found = re.findall(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if len(found) != 1 or not _VERSION.match(found[0]):
        raise ReleaseError(f"src/comfy_worker/__init__.py: expected one semantic __version__, found {found}")
    return found[0]


def version_of_tag(tag: str) -> str:
    if not tag.startswith("v") or not _VERSION.match(tag[1:]):
        raise ReleaseError(f"{tag!r} is not a version tag (v<major>.<minor>.<patch>, e.g. v1.2.3)")
    return tag[1:]


def changelog_entry(version: str, root: Path = ROOT) -> str:
    """The text of CHANGELOG.md's entry for `version` (Keep a Changelog: `## [1.2.3] - 2026-11-29`)."""
    text = (root / "CHANGELOG.md").read_text()
    heading = re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.MULTILINE)
    if heading is None:
        raise ReleaseError(f"CHANGELOG.md has no entry '## [{version}] - YYYY-MM-DD'")
    rest = text[heading.end():]
    following = re.search(r"^## \[|^\[[^\]]+\]: ", rest, re.MULTILINE)
    return rest[:following.start() if following else len(rest)].strip()


def check(tag: str, root: Path = ROOT) -> str:
    """The version a tag releases, after checking that the repository says the same."""
    version = version_of_tag(tag)
    declared = package_version(root)
    if version != declared:
        raise ReleaseError(f"tag {tag} is version {version}, but the package says {declared} "
                           "(src/comfy_worker/__init__.py)")
    changelog_entry(version, root)
    if not variants(root):
        raise ReleaseError("variants/ holds no <name>/models.yaml")
    return version


def pins(root: Path = ROOT) -> list[str]:
    """docker/pins.env's KEY=VALUE lines, read by the rules docker/pins.sh applies."""
    lines = []
    for line in (root / "docker" / "pins.env").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, sep, _ = line.partition("=")
        if not sep or not _PIN_KEY.match(key):
            raise ReleaseError(f"docker/pins.env: not a KEY=VALUE line: {line}")
        lines.append(line)
    return lines


def variants(root: Path = ROOT) -> list[str]:
    """The release variants: every folder of variants/ with a models.yaml, `base` first."""
    names = sorted(path.parent.name for path in (root / "variants").glob("*/models.yaml"))
    return sorted(names, key=lambda name: name != BASE)


def tags(version: str, variant: str, images: Sequence[str]) -> list[str]:
    """Every tag of one variant's image: `<version>-<variant>` always; the moving `<major>-<variant>` for a
    release (not a pre-release); the base variant also under the bare `<version>` and `<major>`."""
    match = _VERSION.match(version)
    if match is None:
        raise ReleaseError(f"{version!r} is not a semantic version")
    names = [f"{version}-{variant}"]
    if match.group(4) is None:
        names.append(f"{match.group(1)}-{variant}")
    if variant == BASE:
        names += [name.removesuffix(f"-{BASE}") for name in names]
    return [f"{image}:{name}" for image in images for name in names]


def notes(version: str, images: Sequence[str], root: Path = ROOT) -> str:
    """The GitHub release's text: the CHANGELOG entry, then the images to deploy."""
    lines = [changelog_entry(version, root), "", "### Images", ""]
    for variant in variants(root):
        lines.append(f"- `{variant}`: " + ", ".join(f"`{tag}`" for tag in tags(version, variant, images)))
    lines += ["", "Deploy: README.md, section Deploy. What a version may change: CHANGELOG.md."]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/release.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    check_command = commands.add_parser("check", help="check the tag against the repository")
    check_command.add_argument("--tag", required=True)
    commands.add_parser("pins", help="docker/pins.env as build arguments")
    commands.add_parser("variants", help="the release variants")
    for name in ("tags", "notes"):
        sub = commands.add_parser(name)
        sub.add_argument("--tag", required=True)
        sub.add_argument("--image", action="append", required=True,
                         help="registry/namespace/name (repeatable)")
        if name == "tags":
            sub.add_argument("--variant", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            out = [check(args.tag)]
        elif args.command == "pins":
            out = pins()
        elif args.command == "variants":
            out = variants()
        elif args.command == "tags":
            if args.variant not in variants():
                raise ReleaseError(f"no variant {args.variant!r}: "
                                   f"variants/{args.variant}/models.yaml is missing")
            out = tags(check(args.tag), args.variant, args.image)
        else:
            out = [notes(check(args.tag), args.image).rstrip("\n")]
    except ReleaseError as exc:
        sys.stderr.write(f"release.py: {exc}\n")
        return 1
    sys.stdout.write("".join(f"{line}\n" for line in out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
