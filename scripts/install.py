"""Install the workflow's packages into a Python interpreter, keeping what already fits.

    python scripts/install.py [--dry-run] [--python PATH]

Reads requirements.txt and requirements-train.txt, keeps every installed package inside
its `# accept:` range (e.g. Colab's CUDA torch), installs the pins of the rest with pip,
then audiocraft and resemblyzer with --no-deps, and checks that `import audiocraft.models`
and `import resemblyzer` work.
"""

import argparse
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from voice_train.errors import ERROR_PREFIX, VoiceTrainError  # noqa: E402
from voice_train.install import install  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the pip commands only")
    parser.add_argument(
        "--python", default=sys.executable, help="the interpreter to install into (default: this one)"
    )
    args = parser.parse_args(argv)
    try:
        install(SCRIPTS.parent, args.python, dry_run=args.dry_run)
    except VoiceTrainError as exc:
        print(f"{ERROR_PREFIX} {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
