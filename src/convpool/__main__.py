"""`python -m convpool`: how this convpool was built (versions, CPU kernels, CUDA architectures,
emulator), with a warning on stderr for each mismatch (e.g. built against another torch).
`python -m convpool --json` prints convpool.build_info() as JSON instead."""
import argparse
import json
import sys

from .info import build_info, build_warnings, format_build_info


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m convpool", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print build_info() as JSON")
    args = parser.parse_args(argv)
    info = build_info()
    print(json.dumps(info, indent=2) if args.json else format_build_info(info))
    for problem in build_warnings(info):
        print(f"warning: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
